"""A batch's feature counts per segment value: the counts of worker/core/feature_counts.py
for each value of a segment field (the worker's ``segment_fields``), all values at once.

The rows are grouped by value with ``np.unique(..., return_inverse=True)`` and sorted by
group (stably), so each group is one contiguous run of columns. The numeric features are
then counted as ``NumericBlock.count`` does (one comparison of the whole matrix per edge
column), with ``np.add.reduceat`` over the runs in place of one sum per feature: every
group's "at or above this edge" counts come out of the same pass. A categorical feature's
slots (``category_slots``) are offset by group and counted by one ``bincount``. So the cost
grows with the rows, not with the number of values, and each group's counts equal
``CountLayout.count`` of its rows alone (the unit tests compare them slot by slot).

Rows without a value (the event lacks the field, or it is null or an object) are in no
group. A batch with more than ``limit`` values (a field of many values, such as a card
number) counts its ``limit`` most frequent apart (ties: by value) and the rest together as
``__other__``, so its cost and size stay bounded. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from worker.core.columns import Columns
from worker.core.feature_counts import AnyArray, CountLayout, IntArray, category_slots
from worker.core.records import OTHER_SEGMENT

IndexArray = npt.NDArray[np.intp]
#: Distinct values of one segment field counted apart, per batch and (the worker's
#: feature_stats_segment_values) per model version and interval.
DEFAULT_SEGMENT_VALUES: Final = 100


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """One segment field's counts over some rows: per value (sorted), the rows that have
    it and their counts in the layout (``counts[i]`` belongs to ``values[i]``)."""

    field: str
    values: tuple[str, ...]
    rows: IntArray  # (values,)
    counts: IntArray  # (values, layout.size)

    @property
    def covers(self) -> int:
        """Rows with a value: when they are all the rows, the groups' sum is the total."""
        return int(self.rows.sum())


def count_by_value(layout: CountLayout, data: Columns | AnyArray, field: str,
                   keys: Sequence[str | None], limit: int = DEFAULT_SEGMENT_VALUES,
                   ) -> SegmentCounts:
    """The counts of ``data``'s rows per value of ``keys`` (row i's value, None: none);
    past ``limit`` values, the less frequent ones together as ``__other__``."""
    present = np.fromiter((k is not None for k in keys), dtype=np.bool_, count=len(keys))
    taken = np.flatnonzero(present)
    if taken.size == 0:
        return SegmentCounts(field, (), np.zeros(0, dtype=np.int64),
                             np.zeros((0, layout.size), dtype=np.int64))
    names = np.array([keys[i] for i in taken.tolist()], dtype=np.str_)
    values, inverse = np.unique(names, return_inverse=True)
    names_kept: list[str] = values.tolist()
    if len(values) > limit:
        names_kept, inverse = _capped(names_kept, inverse.astype(np.intp), limit)
    order = np.argsort(inverse, kind="stable")
    group = inverse[order].astype(np.intp)
    rows = np.bincount(group, minlength=len(names_kept)).astype(np.int64)
    counts = count_grouped(layout, data, taken[order], group, rows)
    return SegmentCounts(field, tuple(names_kept), rows, counts)


def _capped(values: list[str], inverse: IndexArray, limit: int) -> tuple[list[str], IndexArray]:
    """The ``limit`` most frequent values (ties: the first in order) and ``__other__``."""
    frequency = np.bincount(inverse, minlength=len(values))
    kept = np.sort(np.argsort(-frequency, kind="stable")[:limit])
    remap = np.full(len(values), len(kept), dtype=np.intp)
    remap[kept] = np.arange(len(kept))
    return [values[i] for i in kept.tolist()] + [OTHER_SEGMENT], remap[inverse]


def count_grouped(layout: CountLayout, data: Columns | AnyArray, take: IndexArray,
                  group: IndexArray, rows: IntArray) -> IntArray:
    """(groups, layout.size) counts: rows ``take`` of ``data``, row ``take[i]`` in group
    ``group[i]``; ``group`` ascending, every group non-empty (``rows[g]`` rows)."""
    groups = len(rows)
    # Slots by group (transposed): each slot's counts of all groups are one contiguous row.
    out = np.zeros((layout.size, groups), dtype=np.int64)
    if isinstance(data, Columns):
        columns: list[AnyArray] = [a[take] for a in data.arrays]
    else:
        matrix = np.asarray(data)[take]
        columns = [matrix[:, k] for k in range(matrix.shape[1])]
    if len(columns) != len(layout.features):
        raise ValueError(f"{len(columns)} columns for {len(layout.features)} features")
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.intp)
    positions = layout.numeric.positions
    xt = np.empty((len(positions), len(take)), dtype=np.float64)
    for j, k in enumerate(positions):
        xt[j] = columns[k]
    _numeric_grouped(layout, xt, starts, rows, out)  # first: it sets the bin slots
    for slots, column in zip(layout.features, columns, strict=True):
        if not slots.numeric:
            width = slots.bins + 1
            index = group * width + category_slots(column, slots.lookup, slots.bins)
            out[slots.start : slots.stop] += np.bincount(
                index, minlength=groups * width).reshape(groups, width).T
    return np.ascontiguousarray(out.T)


def _numeric_grouped(layout: CountLayout, xt: npt.NDArray[np.float64], starts: IndexArray,
                     rows: IntArray, out: IntArray) -> None:
    """``NumericBlock.count`` per run of columns (``starts``), into ``out`` (slots x
    groups)."""
    block = layout.numeric
    features, n = xt.shape
    if features == 0 or n == 0:
        return
    width = block.real.shape[1]
    # reached[b, f, g]: group g's values of feature f at or above the edge below bin b.
    reached = np.empty((width + 1, features, len(starts)), dtype=np.int64)
    reached[0] = rows
    reached[width] = 0
    flags = np.empty((features, n), dtype=np.bool_)
    for b in range(width - 1):
        np.greater_equal(xt, block.edges[:, b : b + 1], out=flags)
        reached[b + 1] = np.add.reduceat(flags, starts, axis=1, dtype=np.int64)
    bins = reached[:-1] - reached[1:]  # (bins, features, groups)
    missing = np.add.reduceat(np.isnan(xt), starts, axis=1, dtype=np.int64)
    bins[0] -= missing
    out[block.bin_slots] = bins.transpose(1, 0, 2)[block.real]  # slots of their own
    out[block.tails[0]] += missing
    np.less(xt, block.low, out=flags)
    out[block.tails[1]] += np.add.reduceat(flags, starts, axis=1, dtype=np.int64)
    np.greater(xt, block.high, out=flags)
    out[block.tails[2]] += np.add.reduceat(flags, starts, axis=1, dtype=np.int64)
