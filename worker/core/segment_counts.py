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
group. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.core.columns import Columns
from worker.core.feature_counts import AnyArray, CountLayout, IntArray, category_slots

IndexArray = npt.NDArray[np.intp]


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
                   keys: Sequence[str | None]) -> SegmentCounts:
    """The counts of ``data``'s rows per value of ``keys`` (row i's value, None: none)."""
    present = np.fromiter((k is not None for k in keys), dtype=np.bool_, count=len(keys))
    taken = np.flatnonzero(present)
    if taken.size == 0:
        return SegmentCounts(field, (), np.zeros(0, dtype=np.int64),
                             np.zeros((0, layout.size), dtype=np.int64))
    names = np.array([keys[i] for i in taken.tolist()], dtype=np.str_)
    values, inverse = np.unique(names, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    group = inverse[order].astype(np.intp)
    rows = np.bincount(group, minlength=len(values)).astype(np.int64)
    counts = count_grouped(layout, data, taken[order], group, rows)
    return SegmentCounts(field, tuple(values.tolist()), rows, counts)


def count_grouped(layout: CountLayout, data: Columns | AnyArray, take: IndexArray,
                  group: IndexArray, rows: IntArray) -> IntArray:
    """(groups, layout.size) counts: rows ``take`` of ``data``, row ``take[i]`` in group
    ``group[i]``; ``group`` ascending, every group non-empty (``rows[g]`` rows)."""
    groups = len(rows)
    out = np.zeros((groups, layout.size), dtype=np.int64)
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
    _numeric_grouped(layout, xt, starts, rows, out)
    for slots, column in zip(layout.features, columns, strict=True):
        if not slots.numeric:
            width = slots.bins + 1
            index = group * width + category_slots(column, slots.lookup, slots.bins)
            out[:, slots.start : slots.stop] += np.bincount(
                index, minlength=groups * width).reshape(groups, width)
    return out


def _numeric_grouped(layout: CountLayout, xt: npt.NDArray[np.float64], starts: IndexArray,
                     rows: IntArray, out: IntArray) -> None:
    """``NumericBlock.count`` per run of columns (``starts``), into ``out``'s rows."""
    block = layout.numeric
    features, n = xt.shape
    if features == 0 or n == 0:
        return
    width = block.real.shape[1]
    groups = len(starts)
    # reached[g, f, b]: group g's values of feature f at or above the edge below bin b.
    reached = np.zeros((groups, features, width + 1), dtype=np.int64)
    reached[:, :, 0] = rows[:, None]
    flags = np.empty((features, n), dtype=np.bool_)
    for b in range(width - 1):
        np.greater_equal(xt, block.edges[:, b : b + 1], out=flags)
        reached[:, :, b + 1] = np.add.reduceat(flags, starts, axis=1, dtype=np.int64).T
    bins = reached[:, :, :-1] - reached[:, :, 1:]
    missing = np.add.reduceat(np.isnan(xt), starts, axis=1, dtype=np.int64).T
    bins[:, :, 0] -= missing
    out[:, block.bin_slots] += bins[:, block.real]
    out[:, block.tails[0]] += missing
    np.less(xt, block.low, out=flags)
    out[:, block.tails[1]] += np.add.reduceat(flags, starts, axis=1, dtype=np.int64).T
    np.greater(xt, block.high, out=flags)
    out[:, block.tails[2]] += np.add.reduceat(flags, starts, axis=1, dtype=np.int64).T
