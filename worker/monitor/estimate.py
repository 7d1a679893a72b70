"""Estimated figures before labels come (confidence-based, as NannyML's CBPE) and the
calibration of the labeled part, as exact mergeable terms.

Every prediction of a binary model with a calibration map (worker/model/calibration.py)
adds, on first sighting, its calibrated rate ``c`` (the expected outcome of that one
prediction; a multiple of 2**-20, so its sums are exact): to ``est_pos`` always and to
``est_tp`` when the decision was positive, counts ``est_count`` and ``est_alerts``, and
one bin of ``est_auc`` keyed by ``c``'s units. The expected confusion at the model's
threshold follows: TP = est_tp, FP = alerts - TP, FN = est_pos - TP, TN = n - alerts - FN.

The estimated ROC AUC is CBPE's: the trapezoid area under the expected ROC curve, each
prediction counting as ``c`` of a positive and ``1 - c`` of a negative, over every
threshold on the raw score. The map is non-decreasing in the score, so predictions with a
larger ``c`` all have larger scores, and within one value of ``c`` the order of the scores
does not change the area (a pair there adds c(1 - c) whichever is above): a count per
value of ``c`` (at most one per step of the map) gives that area exactly, as the
Mann-Whitney statistic of the positive mass against the negative mass ordered by ``c``,
ties counting one half.

Every labeled prediction of a binary model adds, for the reliability table, one of
``RELIABILITY_BINS`` equal-width score bins: its count (``rel_n``), its positives
(``rel_pos``) and its score (exact sum ``rel_score_<bin>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from worker.model.calibration import RATE_UNITS, Calibration
from worker.monitor import exactsum
from worker.monitor.exactsum import ExactSum
from worker.monitor.terms import MATURITY_BOUNDS_MS, MATURITY_BOUNDS_S, RELIABILITY_BINS

Figure = int | float | None


class Agg(Protocol):
    """What the figures read of a ``Agg``."""

    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def sums(self) -> Mapping[str, ExactSum]: ...
    @property
    def hists(self) -> Mapping[str, Mapping[int, int]]: ...


Compute = Callable[[Any, Any], Figure]


class Column(NamedTuple):
    """Vectorised terms: ``rows`` (positions in the caller's batch) and their values."""

    name: str
    rows: Any
    values: Any


class Columns(NamedTuple):
    counts: tuple[Column, ...]  # values: unused (each row counts one)
    sums: tuple[Column, ...]
    bins: tuple[Column, ...]


def est_columns(scores: Any, decided: Any, calibration: Calibration | None) -> Columns:
    """``terms.est_terms`` for many first sightings at once (``scores`` NaN where not a valid
    float score), to the bit: same units, same logit bins (by ``math``)."""
    if calibration is None:
        return Columns((), (), ())
    with np.errstate(invalid="ignore"):
        valid = (scores >= 0.0) & (scores <= 1.0)
    rows = np.flatnonzero(valid)
    s, d = scores[valid], decided[valid]
    units = calibration.units_of(s)
    c = units / RATE_UNITS
    return Columns(
        (Column("est_count", rows, None), Column("est_alerts", rows[d], None)),
        (Column("est_pos", rows, c), Column("est_tp", rows[d], c[d])),
        (Column("est_auc", rows, units),),
    )


def reliability_columns(scores: Any, positive: Any) -> Columns:
    """The reliability terms of ``terms._binary`` for many valid labeled scores at once
    (the same truncation as ``terms.reliability_bin``)."""
    bins = np.minimum((scores * RELIABILITY_BINS).astype(np.int64), RELIABILITY_BINS - 1)
    rows = np.arange(len(scores))
    sums = tuple(Column(f"rel_score_{b}", rows[bins == b], scores[bins == b])
                 for b in range(RELIABILITY_BINS))
    return Columns((), sums, (Column("rel_n", rows, bins),
                              Column("rel_pos", rows[positive], bins[positive])))


def maturity_columns(ages_ms: Any) -> Any:
    """``terms.maturity_bin`` of many label ages after their window's end: numpy's
    searchsorted 'left' is bisect_left."""
    return np.searchsorted(np.asarray(MATURITY_BOUNDS_MS, dtype=np.int64), ages_ms,
                           side="left")


# --- figures -------------------------------------------------------------------------


class Expected(NamedTuple):
    """The expected confusion at the model's threshold over ``n`` predictions."""

    n: int
    alerts: int
    positives: float
    tp: float

    @property
    def fp(self) -> float:
        return self.alerts - self.tp

    @property
    def fn(self) -> float:
        return self.positives - self.tp

    @property
    def tn(self) -> float:
        return self.n - self.alerts - self.fn


def expected(agg: Agg) -> Expected | None:
    n = agg.counts.get("est_count", 0)
    if not n:
        return None
    total = exactsum.value(agg.sums.get("est_pos", ()))
    tp = exactsum.value(agg.sums.get("est_tp", ()))
    return Expected(n, agg.counts.get("est_alerts", 0), total, tp)


def _div(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _est(fn: Callable[[Expected], Figure]) -> Callable[[Agg, object], Figure]:
    def compute(agg: Agg, _ref: object) -> Figure:
        e = expected(agg)
        return None if e is None else fn(e)

    return compute


est_positives = _est(lambda e: e.positives)
est_alert_rate = _est(lambda e: e.alerts / e.n)
est_precision = _est(lambda e: _div(e.tp, e.alerts))
est_recall = _est(lambda e: _div(e.tp, e.positives))
est_f1 = _est(lambda e: _div(2 * e.tp, e.alerts + e.positives))
est_accuracy = _est(lambda e: (e.tp + e.tn) / e.n)


def est_roc_auc(agg: Agg, _ref: object = None) -> Figure:
    """Weighted Mann-Whitney ordered by ``c``: expected positives ``c`` against expected
    negatives ``1 - c``, a pair at one value of ``c`` counting one half (the module's
    docstring says why that is CBPE's area over the raw scores, exactly)."""
    counts: Mapping[int, int] = agg.hists.get("est_auc", {})
    pos = sum(n * units for units, n in counts.items())  # in RATE_UNITs: exact integers
    neg = sum(n * (RATE_UNITS - units) for units, n in counts.items())
    if not pos or not neg:
        return None
    below = twice = 0
    for units in sorted(counts):
        p, q = counts[units] * units, counts[units] * (RATE_UNITS - units)
        twice += p * (2 * below + q)
        below += q
    return twice / (2 * pos * neg)


def gap(realized: Callable[[Any, Any], Figure],
        estimated: Callable[[Any, Any], Figure]) -> Callable[[Any, Any], Figure]:
    """Realized minus estimated, where both are defined: negative when the model does
    worse than its scores promised (concept drift, or a calibration gone stale)."""
    def compute(agg: Any, ref: Any) -> Figure:
        r, e = realized(agg, ref), estimated(agg, ref)
        return None if r is None or e is None else float(r) - float(e)

    return compute


@dataclass(frozen=True, slots=True)
class ReliabilityRow:
    """One score bin ``[low, high)`` of the labeled part: rows, mean score, positive rate."""

    low: float
    high: float
    count: int
    mean_score: float
    positive_rate: float


def reliability(agg: Agg) -> list[ReliabilityRow]:
    """The reliability table of the labeled part: per non-empty score bin, its count,
    mean score and observed positive rate."""
    counts: Mapping[int, int] = agg.hists.get("rel_n", {})
    positives: Mapping[int, int] = agg.hists.get("rel_pos", {})
    rows = []
    for b in sorted(counts):
        n = counts[b]
        total = exactsum.value(agg.sums.get(f"rel_score_{b}", ()))
        rows.append(ReliabilityRow(b / RELIABILITY_BINS, (b + 1) / RELIABILITY_BINS, n,
                                   total / n, positives.get(b, 0) / n))
    return rows


def ece(agg: Agg, _ref: object = None) -> Figure:
    """Expected calibration error: sum over bins of count * |mean score - positive rate|,
    over the labeled count (the sum over bins of |score sum - positives|, over n)."""
    counts: Mapping[int, int] = agg.hists.get("rel_n", {})
    n = sum(counts.values())
    if not n:
        return None
    positives: Mapping[int, int] = agg.hists.get("rel_pos", {})
    gaps = [abs(exactsum.value(agg.sums.get(f"rel_score_{b}", ())) - positives.get(b, 0))
            for b in counts]
    return math.fsum(gaps) / n


def maturity(agg: Agg) -> list[tuple[float | None, float]]:
    """The window's label maturity as a function of its age: for each age after the window
    closed (seconds; 0: by the close; None: any later), the share of its predictions
    labeled by then. The curve stops at the last age any label came at, so its last point
    is the window's coverage now; how far it reaches and how it flattens say how final the
    window's figures are."""
    predicted = agg.counts.get("predicted", 0)
    if not predicted:
        return []
    buckets: Mapping[int, int] = agg.hists.get("mature", {})
    last = max(buckets, default=0)
    out: list[tuple[float | None, float]] = []
    total = 0
    for i, bound in enumerate((*MATURITY_BOUNDS_S, None)[: last + 1]):
        total += buckets.get(i, 0)
        out.append((bound, total / predicted))
    return out


def window_details(agg: Agg) -> dict[str, list[dict[str, Any]]]:
    """The model-metrics record's tables: the reliability table of the labeled part and
    the label maturity curve."""
    return {
        "reliability": [{"low": r.low, "high": r.high, "count": r.count,
                         "mean_score": r.mean_score, "positive_rate": r.positive_rate}
                        for r in reliability(agg)],
        "maturity": [{"age_s": bound, "coverage": share} for bound, share in maturity(agg)],
    }
