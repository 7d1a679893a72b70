"""Per-window deltas of a batch with numpy: what ``aggregate.window_deltas`` computes, fast.

Each row (a first sighting, a joined outcome, an expired prediction) gets its terms
from ``terms.py`` once, the same arithmetic as the per-event path. The rows are then
grouped by (window start, model version) for every window size with numpy, and each
group's counters, exact sums and histogram bins are added up at once. Exact sums are
``exactsum.canonical`` of the group's values, which does not depend on their order,
so the deltas equal ``window_deltas`` of the same events to the bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from worker.monitor import exactsum
from worker.monitor.aggregate import WindowAgg
from worker.monitor.bulk import Joined
from worker.monitor.codec import ModelKey, Pred
from worker.monitor.terms import EXPIRED, Terms, joined_terms, score_terms
from worker.monitor.views import ModelSpec
from worker.monitor.windows import WindowKey, parse_window

SpecOf = Callable[[ModelKey, Pred], ModelSpec]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
_COMBINED_LIMIT: Final = 1 << 62


class _Rows:
    """The batch's rows as columns: version code, event time, and their terms."""

    def __init__(self) -> None:
        self.keys: list[ModelKey] = []
        self.specs: list[ModelSpec] = []
        self._code: dict[ModelKey, int] = {}
        self.codes: list[int] = []
        self.times: list[int] = []
        self.sigs: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[str, tuple[list[int], list[float]]] = {}
        self.bins: dict[str, tuple[list[int], list[int]]] = {}

    def code(self, pred: Pred, spec_of: SpecOf) -> int:
        key = (pred[0], pred[1])
        code = self._code.get(key)
        if code is None:
            code = self._code[key] = len(self.keys)
            self.keys.append(key)
            self.specs.append(spec_of(key, pred))
        return code

    def add(self, code: int, time: int, terms: Terms) -> None:
        row = len(self.codes)
        self.codes.append(code)
        self.times.append(time)
        sig = self.sigs.get(terms.counts)
        if sig is None:
            sig = self.sigs[terms.counts] = []
        sig.append(row)
        for name, x in terms.sums:
            rows, values = self.sums.get(name) or self.sums.setdefault(name, ([], []))
            rows.append(row)
            values.append(x)
        for hist, b in terms.bins:
            rows, keys = self.bins.get(hist) or self.bins.setdefault(hist, ([], []))
            rows.append(row)
            keys.append(b)


def batch_deltas(
    windows: Sequence[str],
    spec_of: SpecOf,
    new_preds: Sequence[Pred] = (),
    outcomes: Sequence[Joined] = (),
    expired: Sequence[Pred] = (),
) -> dict[WindowKey, WindowAgg]:
    """One delta per window touched: first sightings, joined outcomes and expired
    predictions, each placed by its prediction's event time."""
    rows = _Rows()
    specs = rows.specs
    for pred in new_preds:
        code = rows.code(pred, spec_of)
        rows.add(code, pred[4], score_terms(pred[2], specs[code]))
    for pred, truth, _t, _at, _inline in outcomes:
        code = rows.code(pred, spec_of)
        rows.add(code, pred[4], joined_terms(pred[2], pred[3], truth, specs[code]))
    for pred in expired:
        rows.add(rows.code(pred, spec_of), pred[4], EXPIRED)
    if not rows.codes:
        return {}
    codes = np.array(rows.codes, dtype=np.int64)
    times = np.array(rows.times, dtype=np.int64)
    out: dict[WindowKey, WindowAgg] = {}
    for window in windows:
        size = parse_window(window)
        starts = times - times % size
        groups, inverse = _group(starts, codes, len(rows.keys))
        for (start, code), agg in zip(groups, _fold(rows, inverse, len(groups)), strict=True):
            model, version = rows.keys[code]
            out[WindowKey(model, version, window, start)] = WindowAgg(
                rows.specs[code].task, agg[0], agg[1], agg[2])
    return out


def _group(starts: IntArray, codes: IntArray, n_codes: int) -> tuple[list[tuple[int, int]],
                                                                        IntArray]:  # fmt: skip
    lo, hi = int(starts.min()), int(starts.max())
    if (max(abs(lo), abs(hi)) + 1) * n_codes < _COMBINED_LIMIT:
        combined = starts * n_codes + codes
        uniq, inverse = np.unique(combined, return_inverse=True)
        # floor division undoes the combination for negative starts too
        pairs = [(int(c // n_codes), int(c % n_codes)) for c in uniq.tolist()]
        return pairs, inverse.astype(np.int64)
    stacked = np.stack([starts, codes], axis=1)
    uniq2, inverse = np.unique(stacked, axis=0, return_inverse=True)
    return [(int(s), int(c)) for s, c in uniq2.tolist()], inverse.reshape(-1).astype(np.int64)


Folded = tuple[dict[str, int], dict[str, exactsum.ExactSum], dict[str, dict[int, int]]]


def _fold(rows: _Rows, inverse: IntArray, n_groups: int) -> list[Folded]:
    folded: list[Folded] = [({}, {}, {}) for _ in range(n_groups)]
    for sig, members in rows.sigs.items():
        per_group = np.bincount(inverse[np.array(members, dtype=np.int64)], minlength=n_groups)
        for g in np.flatnonzero(per_group).tolist():
            counts = folded[g][0]
            n = int(per_group[g])
            for name in sig:
                counts[name] = counts.get(name, 0) + n
    for name, (members, values) in rows.sums.items():
        g_of = inverse[np.array(members, dtype=np.int64)]
        order = np.argsort(g_of, kind="stable")
        sorted_g = g_of[order]
        ordered = np.array(values, dtype=np.float64)[order]
        cuts = np.flatnonzero(np.diff(sorted_g)) + 1
        for chunk_g, chunk in zip(sorted_g[np.r_[0, cuts]].tolist(), np.split(ordered, cuts),
                                  strict=True):  # fmt: skip
            total = exactsum.canonical(chunk.tolist())
            if total:
                folded[chunk_g][1][name] = total
    for hist, (members, keys) in rows.bins.items():
        g_of = inverse[np.array(members, dtype=np.int64)]
        k = np.array(keys, dtype=np.int64)
        pairs, n_of = np.unique(np.stack([g_of, k], axis=1), axis=0, return_counts=True)
        for (g, b), n in zip(pairs.tolist(), n_of.tolist(), strict=True):
            folded[g][2].setdefault(hist, {})[b] = n
    return folded
