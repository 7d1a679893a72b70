"""A batch's feature values counted into the bundle's reference bins: exact integer
counts that merge by addition, so any number of batches, intervals or workers add up to
the counts of all their events.

One flat int64 vector per model (``CountLayout.size`` slots); each feature owns a
slice of it, in the manifest's order:

- numeric (number, integer): one slot per reference bin (worker/model/profile.py: the
  outer bins are open), then ``missing``, ``below`` (under the reference minimum) and
  ``above`` (over its maximum). A value out of range is in a bin as well.
- categorical (string, boolean): one slot per reference top value, then ``other``
  (present, not a top value), then ``missing``. When the reference is complete (every
  value it had is a top value), ``other`` counts exactly the unseen categories.

Counting is vectorised: one comparison per edge column of all numeric features at
once (``NumericBlock``), ``searchsorted`` and ``bincount`` for a lone column, one C-level
``dict.get`` pass for categories (only the values that miss the lookup are looked at
again, to tell a missing value from another category). Pure: no I/O, no clock.

Which events are counted is the caller's choice (worker/core/pipeline.py: every event
that decoded into an object, scored or dead-lettered). Events whose values the model's
own checks refused are counted as columns of ``lenient`` features: there, a value that
is not a usable value of its feature's type (absent, null, a string for a number, not
finite) counts as missing, so a feed that breaks one field shows in that field's
missing rate whether the model refuses or imputes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from worker.core.columns import Columns
from worker.model.feature_types import Feature
from worker.model.profile import FeatureProfile, Profile

IntArray: TypeAlias = npt.NDArray[np.int64]
AnyArray: TypeAlias = npt.NDArray[Any]
NUMERIC_TAIL: Final = ("missing", "below", "above")
CATEGORICAL_TAIL: Final = ("other", "missing")


@dataclass(frozen=True, slots=True)
class FeatureSlots:
    """Where one feature's counts sit in the model's vector, and how to count them."""

    profile: FeatureProfile
    start: int
    bins: int
    edges: npt.NDArray[np.float64]
    lookup: dict[Any, int]

    @property
    def numeric(self) -> bool:
        return self.profile.kind == "numeric"

    @property
    def size(self) -> int:
        return self.bins + (3 if self.numeric else 1)

    @property
    def stop(self) -> int:
        return self.start + self.size

    def count(self, values: AnyArray, out: IntArray) -> None:
        """Add the counts of ``values`` (one typed column) into ``out[start:stop]``."""
        view = out[self.start : self.stop]
        if self.numeric:
            view += _numeric(values, self.edges, self.profile)
        else:
            view += _categorical(values, self.lookup, self.bins)


@dataclass(frozen=True, slots=True)
class NumericBlock:
    """Every numeric feature of a batch at once, as a (features x rows) matrix.

    A bin's count is a difference of two counts of "at least this edge": comparing the
    whole matrix with each edge column in turn and summing the rows gives, for every
    feature at once, how many values reach that edge. That is exactly what
    ``searchsorted(edges, x, side="right")`` followed by a ``bincount`` gives, without a
    branchy binary search per value or an index array (LR30, 1,000 rows: a third of
    their time). NaN reaches no edge, so it falls in the first bin, and is taken out
    there."""

    positions: tuple[int, ...]
    #: (features, most edges): each feature's edges, padded with NaN (reached by nothing).
    edges: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]  # (features, 1): reference minimum (-inf: none)
    high: npt.NDArray[np.float64]  # (features, 1): reference maximum (+inf: none)
    real: npt.NDArray[np.bool_]  # (features, most bins): which bins exist
    bin_slots: npt.NDArray[np.intp]  # the vector's slot of each real bin, row-major
    tails: npt.NDArray[np.intp]  # (3, features): the missing, below and above slots

    @classmethod
    def of(cls, slots: Sequence[FeatureSlots], positions: Sequence[int]) -> NumericBlock:
        chosen = [slots[k] for k in positions]
        width = max((s.bins for s in chosen), default=1)
        real = np.zeros((len(chosen), width), dtype=np.bool_)
        edges = np.full((len(chosen), width - 1), np.nan, dtype=np.float64)
        for j, s in enumerate(chosen):
            real[j, : s.bins] = True
            edges[j, : s.bins - 1] = s.edges
        low = [[-np.inf if s.profile.min is None else s.profile.min] for s in chosen]
        high = [[np.inf if s.profile.max is None else s.profile.max] for s in chosen]
        bins = [s.start + b for s in chosen for b in range(s.bins)]
        tails = [[s.start + s.bins + t for s in chosen] for t in range(3)]
        return cls(tuple(positions), edges,
                   np.array(low, dtype=np.float64).reshape(-1, 1),
                   np.array(high, dtype=np.float64).reshape(-1, 1), real,
                   np.array(bins, dtype=np.intp),
                   np.array(tails, dtype=np.intp).reshape(3, len(chosen)))

    def count(self, xt: npt.NDArray[np.float64], out: IntArray) -> None:
        """``xt``: one contiguous row per numeric feature, in ``positions`` order."""
        features, rows = xt.shape
        if rows == 0 or features == 0:
            return
        width = self.real.shape[1]
        # reached[:, b]: values at or above the edge below bin b (b = 0: every value).
        reached = np.zeros((features, width + 1), dtype=np.int64)
        reached[:, 0] = rows
        above_edge = np.empty((features, rows), dtype=np.bool_)
        for b in range(width - 1):  # one row-wise pass per edge column: bounded memory
            np.greater_equal(xt, self.edges[:, b : b + 1], out=above_edge)
            reached[:, b + 1] = np.count_nonzero(above_edge, axis=1)
        bins = reached[:, :-1] - reached[:, 1:]
        missing = np.count_nonzero(np.isnan(xt), axis=1)
        bins[:, 0] -= missing
        out[self.bin_slots] += bins[self.real]
        out[self.tails[0]] += missing
        np.less(xt, self.low, out=above_edge)
        out[self.tails[1]] += np.count_nonzero(above_edge, axis=1)
        np.greater(xt, self.high, out=above_edge)
        out[self.tails[2]] += np.count_nonzero(above_edge, axis=1)


@dataclass(frozen=True, slots=True)
class CountLayout:
    """The slots of every feature of a profile; ``count`` fills a fresh vector."""

    features: tuple[FeatureSlots, ...]
    size: int
    numeric: NumericBlock

    @classmethod
    def of(cls, profile: Profile) -> CountLayout:
        slots, start = [], 0
        for p in profile.features:
            lookup = {value: i for i, value in enumerate(p.top)}
            bins = len(p.counts) if p.kind == "numeric" else len(p.top) + 1
            s = FeatureSlots(p, start, bins, np.array(p.edges, dtype=np.float64), lookup)
            slots.append(s)
            start = s.stop
        numeric = [k for k, s in enumerate(slots) if s.numeric]
        return cls(tuple(slots), start, NumericBlock.of(slots, numeric))

    def zeros(self) -> IntArray:
        return np.zeros(self.size, dtype=np.int64)

    def count(self, data: Columns | AnyArray) -> IntArray:
        """The counts of one batch: typed ``Columns``, or a 2-D float64 matrix (the fast
        path's) with the features as its columns."""
        out = self.zeros()
        if isinstance(data, Columns):
            columns: list[AnyArray] = list(data.arrays)
            rows = data.rows
        else:
            matrix = np.asarray(data)
            columns = [matrix[:, k] for k in range(matrix.shape[1])] if matrix.ndim == 2 else []
            rows = matrix.shape[0]
        if len(columns) != len(self.features):
            raise ValueError(f"{len(columns)} columns for {len(self.features)} features")
        positions = self.numeric.positions
        if not isinstance(data, Columns) and len(positions) == len(self.features):
            xt = np.ascontiguousarray(np.asarray(data, dtype=np.float64).T)  # the fast path
        else:
            xt = np.empty((len(positions), rows), dtype=np.float64)
            for j, k in enumerate(positions):
                xt[j] = columns[k]
        self.numeric.count(xt, out)
        for slots, column in zip(self.features, columns, strict=True):
            if not slots.numeric:
                slots.count(column, out)
        return out


def lenient(features: Sequence[Feature]) -> list[Feature]:
    """``features`` as refused events are counted: any value may be missing, any category
    is a category."""
    return [replace(f, missing=True, categories=None) for f in features]


def _numeric(values: AnyArray, edges: npt.NDArray[np.float64], p: FeatureProfile) -> IntArray:
    x = values if values.dtype == np.float64 else values.astype(np.float64)
    missing = int(np.count_nonzero(np.isnan(x))) if x.dtype.kind == "f" else 0
    # NaN sorts after every edge: it lands in the last bin, taken out again below.
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    counts[-1] -= missing
    below = int(np.count_nonzero(x < p.min)) if p.min is not None else 0
    above = int(np.count_nonzero(x > p.max)) if p.max is not None else 0
    return np.concatenate([counts, [missing, below, above]]).astype(np.int64)


def _categorical(values: AnyArray, lookup: dict[Any, int], bins: int) -> IntArray:
    """Slots 0..bins-2 the top values, bins-1 other, bins missing."""
    return np.bincount(category_slots(values, lookup, bins), minlength=bins + 1).astype(np.int64)


def category_slots(values: AnyArray, lookup: dict[Any, int], bins: int) -> npt.NDArray[np.intp]:
    """Each value's slot within its feature: 0..bins-2 a top value, bins-1 other, bins
    missing."""
    other, missing = bins - 1, bins
    if values.dtype == np.bool_:
        where = np.array([lookup.get(False, other), lookup.get(True, other)], dtype=np.intp)
        return where[values.astype(np.intp)]
    index = np.fromiter(map(lookup.get, values, repeat(other)), dtype=np.intp,
                        count=len(values))
    unknown = np.flatnonzero(index == other)
    if unknown.size:
        gone = [i for i, v in zip(unknown.tolist(), values[unknown].tolist(), strict=True)
                if _is_missing(v)]
        index[gone] = missing
    return index


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
