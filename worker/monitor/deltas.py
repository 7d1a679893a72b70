"""Per-window deltas of a batch, grouped with numpy: one delta per window touched.

Each row (a first sighting, a joined outcome, an expired prediction) gets its terms
from ``terms.py`` once, the same arithmetic as the per-event path. The rows are then
grouped by (window start, model version) for every window size with numpy, and each
group's counters, exact sums and histogram bins are added up at once. Exact sums are
``exactsum.canonical`` of the group's values, which does not depend on their order,
so the deltas equal, to the bit, the per-event reference's ``window_deltas`` of the
same events (tests/unit/monitor/reference_join.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

import numpy as np

from worker.monitor import exactsum
from worker.monitor.aggregate import WindowAgg
from worker.monitor.codec import ModelKey, Pred
from worker.monitor.estimate import (
    Columns,
    est_columns,
    maturity_columns,
    reliability_columns,
)
from worker.monitor.join import Joined
from worker.monitor.reasons import count_name
from worker.monitor.segments import segment_names
from worker.monitor.terms import (
    EXPIRED,
    INLINE_LABEL_MS,
    INVALID,
    LOG_LOSS_EPS,
    LOGIT_CLIP,
    LOGIT_SCALE,
    PREDICTED,
    Terms,
    joined_terms,
)
from worker.monitor.views import ModelSpec, same_label
from worker.monitor.windows import WindowKey, parse_window

SpecOf = Callable[[ModelKey, Pred], ModelSpec]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
_COMBINED_LIMIT: Final = 1 << 62


class _Rows:
    """The batch's rows as columns: version code, event time, and their terms (kept as
    chunks of row numbers and values, one chunk per event or per vectorised group)."""

    def __init__(self) -> None:
        #: (model, version, segment): segment "" is the version's own figures.
        self.keys: list[tuple[str, str, str]] = []
        self.specs: list[ModelSpec] = []
        self._code: dict[tuple[str, str, str], int] = {}
        self.codes: list[int] = []
        self.times: list[int] = []
        self.sigs: dict[tuple[str, ...], list[Any]] = {}
        self.sums: dict[str, tuple[list[Any], list[Any]]] = {}
        self.bins: dict[str, tuple[list[Any], list[Any]]] = {}
        #: Counted outcomes and their label times, binned per window by ``maturity``.
        self.labeled: tuple[list[Any], list[Any]] = ([], [])

    def code(self, pred: Pred, spec_of: SpecOf, segment: str = "") -> int:
        key = (pred[0], pred[1], segment)
        code = self._code.get(key)
        if code is None:
            code = self._code[key] = len(self.keys)
            self.keys.append(key)
            self.specs.append(spec_of((pred[0], pred[1]), pred))
        return code

    def add(self, code: int, time: int, terms: Terms) -> None:
        row = len(self.codes)
        self.codes.append(code)
        self.times.append(time)
        self.sig(terms.counts, (row,))
        for name, x in terms.sums:
            self.sum(name, (row,), (x,))
        for hist, b in terms.bins:
            self.bin(hist, (row,), (b,))

    def extend(self, code: int, times: list[int]) -> IntArray:
        """Rows for ``times``, all of version ``code``; returns their row numbers."""
        first = len(self.codes)
        self.codes.extend([code] * len(times))
        self.times.extend(times)
        return np.arange(first, first + len(times), dtype=np.int64)

    def sig(self, counts: tuple[str, ...], rows: Any) -> None:
        if len(rows):
            self.sigs.setdefault(counts, []).append(rows)

    def sum(self, name: str, rows: Any, values: Any) -> None:
        chunks = self.sums.setdefault(name, ([], []))
        chunks[0].append(rows)
        chunks[1].append(values)

    def bin(self, hist: str, rows: Any, keys: Any) -> None:
        chunks = self.bins.setdefault(hist, ([], []))
        chunks[0].append(rows)
        chunks[1].append(keys)

    def label(self, rows: Any, label_ms: Any) -> None:
        self.labeled[0].append(rows)
        self.labeled[1].append(label_ms)

    def maturity(self, ends: IntArray) -> dict[str, tuple[list[Any], list[Any]]]:
        """The bins with, for one window size (``ends``: each row's window end), the
        ``terms.maturity_terms`` of the counted outcomes: numpy's searchsorted 'left' is
        bisect_left."""
        if not self.labeled[0]:
            return self.bins
        rows = _cat(self.labeled[0], np.int64)
        ages = _cat(self.labeled[1], np.int64) - ends[rows]
        return {**self.bins, "mature": ([rows], [maturity_columns(ages)])}


def batch_deltas(
    windows: Sequence[str],
    spec_of: SpecOf,
    new_preds: Sequence[Pred] = (),
    outcomes: Sequence[Joined] = (),
    expired: Sequence[Pred] = (),
    new_reasons: Sequence[str] = (),
) -> dict[WindowKey, WindowAgg]:
    """One delta per window touched: first sightings, joined outcomes and expired
    predictions, each placed by its prediction's event time. A prediction with segments
    also counts in a delta of each of its segments (``WindowKey.segment``).
    ``new_reasons``: the top reason of each of ``new_preds`` (reasons.py), counted in the
    version's own delta when the decision is an alert."""
    rows = _Rows()
    specs = rows.specs
    by_code: dict[int, list[Pred]] = {}
    reasons_of: dict[int, list[str]] = {}
    for pred, seg in _tagged(new_preds, _itself):
        by_code.setdefault(rows.code(pred, spec_of, seg), []).append(pred)
    if any(new_reasons):
        for pred, reason in zip(new_preds, new_reasons, strict=True):
            reasons_of.setdefault(rows.code(pred, spec_of), []).append(reason)
    for code, preds in by_code.items():
        add_predicted(rows, code, specs[code], preds, reasons_of.get(code))
    binary: dict[int, list[Joined]] = {}
    for o, seg in _tagged(outcomes, _first):
        code = rows.code(o[0], spec_of, seg)
        if specs[code].task == "binary":
            binary.setdefault(code, []).append(o)
        else:
            terms = joined_terms(o[0][2], o[0][3], o[1], specs[code])
            rows.add(code, o[0][4], terms)
            if "count" in terms.counts:
                rows.label((len(rows.codes) - 1,), (INLINE_LABEL_MS if o[4] else o[2],))
    for code, items in binary.items():
        add_binary(rows, code, specs[code], items)
    by_code = {}
    for pred, seg in _tagged(expired, _itself):
        by_code.setdefault(rows.code(pred, spec_of, seg), []).append(pred)
    for code, preds in by_code.items():
        rows.sig(EXPIRED.counts, rows.extend(code, [p[4] for p in preds]))
    if not rows.codes:
        return {}
    codes = np.array(rows.codes, dtype=np.int64)
    times = np.array(rows.times, dtype=np.int64)
    out: dict[WindowKey, WindowAgg] = {}
    for window in windows:
        size = parse_window(window)
        starts = times - times % size
        groups, inverse = _group(starts, codes, len(rows.keys))
        folded = _fold(rows, inverse, len(groups), rows.maturity(starts + size))
        for (start, code), agg in zip(groups, folded, strict=True):
            model, version, segment = rows.keys[code]
            out[WindowKey(model, version, window, start, segment)] = WindowAgg(
                rows.specs[code].task, agg[0], agg[1], agg[2])
    return out


T = TypeVar("T")


def _itself(pred: Pred) -> Pred:
    return pred


def _first(outcome: Joined) -> Pred:
    return outcome[0]


def _tagged(items: Sequence[T], pred_of: Callable[[T], Pred]) -> Iterator[tuple[T, str]]:
    """Each item with segment "" (the version's figures), then once per segment of its
    prediction (``field=value``)."""
    for item in items:
        yield item, ""
        text = pred_of(item)[5]
        if text:
            for name in segment_names(text):
                yield item, name


_SIGS: Final = (
    (True, True, ("count", "tp", "positives", "correct")),
    (True, False, ("count", "fn", "positives")),
    (False, True, ("count", "fp")),
    (False, False, ("count", "tn", "correct")),
)


def add_predicted(rows: _Rows, code: int, spec: ModelSpec, preds: list[Pred],
                  reasons: list[str] | None = None) -> None:
    """``terms.prediction_terms`` for many first sightings at once: counted, float scores
    binned against the reference histogram (``psi_bin``: numpy's searchsorted makes the
    same comparisons as bisect), and a binary model's estimate terms. ``reasons`` (one per
    prediction): each alert's top reason is counted (reasons.py)."""
    idx = rows.extend(code, [p[4] for p in preds])
    rows.sig(PREDICTED.counts, idx)
    if reasons is not None and spec.task == "binary":
        _count_reasons(rows, idx, spec, preds, reasons)
    is_float = np.array([type(p[2]) is float for p in preds], dtype=bool)
    if spec.reference is not None:
        scores = np.array([p[2] if type(p[2]) is float else 0.0 for p in preds])[is_float]
        edges = np.asarray(spec.reference.edges, dtype=np.float64)
        bins = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
        rows.bin("psi", idx[is_float], bins)
    if spec.task == "binary" and spec.calibration is not None:
        positive = _Cache(lambda v: same_label(v, spec.positive))
        scores = np.array([p[2] if type(p[2]) is float else math.nan for p in preds])
        decided = np.array([positive(p[3]) for p in preds], dtype=bool)
        _push(rows, idx, est_columns(scores, decided, spec.calibration))


def _count_reasons(rows: _Rows, idx: IntArray, spec: ModelSpec, preds: list[Pred],
                   reasons: list[str]) -> None:
    positive = _Cache(lambda v: same_label(v, spec.positive))
    alerts: dict[str, list[int]] = {}
    for i, (p, reason) in enumerate(zip(preds, reasons, strict=True)):
        if reason and positive(p[3]):
            alerts.setdefault(reason, []).append(i)
    for reason, members in alerts.items():
        rows.sig((count_name(reason),), idx[members])


def _push(rows: _Rows, idx: IntArray, columns: Columns) -> None:
    """Vectorised terms whose row numbers are positions in ``idx``."""
    for c in columns.counts:
        rows.sig((c.name,), idx[c.rows])
    for c in columns.sums:
        if len(c.rows):
            rows.sum(c.name, idx[c.rows], c.values)
    for c in columns.bins:
        rows.bin(c.name, idx[c.rows], c.values)


def add_binary(rows: _Rows, code: int, spec: ModelSpec, items: list[Joined]) -> None:
    """``terms._binary`` for many outcomes of one binary version at once, to the bit: the
    same comparisons, IEEE arithmetic in numpy, and the logarithms by ``math`` itself."""
    allowed = _Cache(lambda v: spec.classes is None or any(same_label(v, c)
                                                           for c in spec.classes))
    positive = _Cache(lambda v: same_label(v, spec.positive))
    p = np.array([o[0][2] if type(o[0][2]) is float else math.nan for o in items])
    y = np.array([positive(o[1]) for o in items], dtype=bool)
    decided = np.array([positive(o[0][3]) for o in items], dtype=bool)
    with np.errstate(invalid="ignore"):
        valid = (p >= 0.0) & (p <= 1.0) & np.array([allowed(o[1]) for o in items], dtype=bool)
    idx = rows.extend(code, [o[0][4] for o in items])
    rows.sig(INVALID.counts, idx[~valid])
    for want_y, want_d, sig in _SIGS:
        rows.sig(sig, idx[valid & (y == want_y) & (decided == want_d)])
    pv, yv, iv = p[valid], y[valid], idx[valid]
    q = np.minimum(np.maximum(np.where(yv, pv, 1.0 - pv), LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
    y1 = yv.astype(np.float64)
    a, b = (1.0 - y1) - (1.0 - pv), y1 - pv
    rows.sum("log_loss", iv, [-math.log(x) for x in q.tolist()])
    rows.sum("brier", iv, 0.5 * (a * a + b * b))
    rows.sum("score", iv, pv)
    clipped = np.minimum(np.maximum(pv, LOGIT_CLIP), 1.0 - LOGIT_CLIP).tolist()
    logits = np.array([round((math.log(x) - math.log1p(-x)) * LOGIT_SCALE) for x in clipped],
                      dtype=np.int64)
    rows.bin("pos", iv[yv], logits[yv])
    rows.bin("neg", iv[~yv], logits[~yv])
    _push(rows, iv, reliability_columns(pv, yv))
    label_ms = np.array([INLINE_LABEL_MS if o[4] else o[2] for o in items], dtype=np.int64)
    rows.label(iv, label_ms[valid])


class _Cache:
    """A label predicate, evaluated once per distinct (type, value) of a batch."""

    def __init__(self, fn: Callable[[Any], bool]) -> None:
        self.fn, self.seen = fn, dict[tuple[type, Any], bool]()

    def __call__(self, v: Any) -> bool:
        key = (type(v), v)
        hit = self.seen.get(key)
        if hit is None:
            hit = self.seen[key] = self.fn(v)
        return hit


def _group(starts: IntArray, codes: IntArray, n_codes: int) -> tuple[list[tuple[int, int]],
                                                                        IntArray]:
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


def _fold(rows: _Rows, inverse: IntArray, n_groups: int,
          bins: dict[str, tuple[list[Any], list[Any]]]) -> list[Folded]:
    folded: list[Folded] = [({}, {}, {}) for _ in range(n_groups)]
    for sig, members in rows.sigs.items():
        per_group = np.bincount(inverse[_cat(members, np.int64)], minlength=n_groups)
        for g in np.flatnonzero(per_group).tolist():
            counts = folded[g][0]
            n = int(per_group[g])
            for name in sig:
                counts[name] = counts.get(name, 0) + n
    for name, (members, values) in rows.sums.items():
        g_of = inverse[_cat(members, np.int64)]
        order = np.argsort(g_of, kind="stable")
        sorted_g = g_of[order]
        ordered = _cat(values, np.float64)[order]
        cuts = np.flatnonzero(np.diff(sorted_g)) + 1
        for chunk_g, chunk in zip(sorted_g[np.r_[0, cuts]].tolist(), np.split(ordered, cuts),
                                  strict=True):
            total = exactsum.canonical(chunk.tolist())
            if total:
                folded[chunk_g][1][name] = total
    for hist, (members, keys) in bins.items():
        g_of = inverse[_cat(members, np.int64)]
        k = _cat(keys, np.int64)
        if not len(k):
            continue
        pairs, n_of = np.unique(np.stack([g_of, k], axis=1), axis=0, return_counts=True)
        for (g, b), n in zip(pairs.tolist(), n_of.tolist(), strict=True):
            folded[g][2].setdefault(hist, {})[b] = n
    return folded


def _cat(chunks: list[Any], dtype: Any) -> Any:
    return np.concatenate([np.asarray(c, dtype=dtype) for c in chunks]) if chunks \
        else np.zeros(0, dtype=dtype)
