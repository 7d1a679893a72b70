"""What one event adds to the windows it falls in, computed once per event.

The arithmetic follows sklearn.metrics exactly (same clipping, same order of
operations per event), so that sums of these terms give sklearn's figures. The
functions take raw values, so that the per-event path (``outcome_terms``) and the
batch path (``worker.monitor.deltas``) share one definition of every term.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Final, NamedTuple

from worker.model.calibration import RATE_UNITS, Calibration
from worker.monitor.views import LabelValue, ModelSpec, Outcome, PredictionView, Score, same_label

# sklearn's log_loss clips probabilities to [eps, 1 - eps] with eps of float64.
LOG_LOSS_EPS: Final = sys.float_info.epsilon
# Logit bins of width 1/200: about 0.5 % relative in score below 0.01, where most
# fraud scores live, so same-bin ties barely move ROC AUC.
LOGIT_SCALE: Final = 200
LOGIT_CLIP: Final = 1e-12
MAX_TERM: Final = 1e290
RELIABILITY_BINS: Final = 10
#: Label maturity: a labeled outcome counts in the first bucket whose bound its label's age
#: after its window closed (label time - window end) does not exceed; bucket 0 holds the
#: labels that came by the close (and those carried by the prediction); the last is unbounded.
MATURITY_BOUNDS_S: Final = (0, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
                            2 * 86400, 3 * 86400, 5 * 86400, 7 * 86400, 14 * 86400)
MATURITY_BOUNDS_MS: Final = tuple(b * 1000 for b in MATURITY_BOUNDS_S)


class Terms(NamedTuple):
    """Counters to increment by one, values to add to exact sums, histogram bins to bump."""

    counts: tuple[str, ...]
    sums: tuple[tuple[str, float], ...] = ()
    bins: tuple[tuple[str, int], ...] = ()


INVALID: Final = Terms(("invalid",))
EXPIRED: Final = Terms(("expired",))
PREDICTED: Final = Terms(("predicted",))


def prediction_terms(pred: PredictionView, spec: ModelSpec) -> Terms:
    base = score_terms(pred.score, spec)
    if spec.task != "binary" or spec.calibration is None:
        return base
    est = est_terms(pred.score, same_label(pred.label, spec.positive), spec.calibration)
    return Terms(base.counts + est.counts, base.sums + est.sums, base.bins + est.bins)


def score_terms(score: Score, spec: ModelSpec) -> Terms:
    """A first sighting of a prediction: counted, and its score binned for PSI."""
    if spec.reference is not None and isinstance(score, float):
        return Terms(("predicted",), bins=(("psi", psi_bin(score, spec.reference.edges)),))
    return PREDICTED


def est_terms(score: Score, decided: bool, calibration: Calibration) -> Terms:
    """A first-seen binary prediction's part of the estimate (worker/monitor/estimate.py):
    its calibrated rate c (a multiple of 2**-20, so sums of it are exact) to est_pos, and to
    est_tp when decided positive; counted; binned by c's units (for the estimated AUC)."""
    if not isinstance(score, float) or not 0.0 <= score <= 1.0:
        return Terms(())
    units = calibration.units(score)
    c = units / RATE_UNITS
    key = (("est_auc", units),)
    if decided:
        return Terms(("est_count", "est_alerts"), (("est_pos", c), ("est_tp", c)), key)
    return Terms(("est_count",), (("est_pos", c),), key)


def reliability_bin(p: float) -> int:
    """One of RELIABILITY_BINS equal-width bins of a score in [0, 1]."""
    return min(int(p * RELIABILITY_BINS), RELIABILITY_BINS - 1)


def outcome_terms(outcome: Outcome, spec: ModelSpec) -> Terms:
    """A joined outcome's terms, the same in every window it falls in (its maturity bin,
    which depends on the window's end, is ``maturity_terms``)."""
    pred = outcome.prediction
    return joined_terms(pred.score, pred.label, outcome.true_label, spec)


#: The label time given to a label carried by the prediction: before any window's end.
INLINE_LABEL_MS: Final = -(1 << 62)


def maturity_terms(terms: Terms, label_ms: int, window_end_ms: int) -> Terms:
    """A counted outcome's part of one window's maturity curve: its label's age after the
    window closed, binned (``INLINE_LABEL_MS`` for an inline label: labeled by the close)."""
    if "count" not in terms.counts:
        return Terms(())
    return Terms((), bins=(("mature", maturity_bin(label_ms - window_end_ms)),))


def maturity_bin(age_ms: int) -> int:
    return bisect_left(MATURITY_BOUNDS_MS, age_ms)


def joined_terms(score: Score, decision: LabelValue, truth: LabelValue, spec: ModelSpec) -> Terms:
    """A prediction (its score and decision) joined with its true label."""
    if spec.task == "binary":
        return _binary(score, decision, truth, spec)
    if spec.task == "multiclass":
        return _multiclass(score, decision, truth)
    return _regression(score, truth)


def _binary(p: Score, decision: LabelValue, truth: LabelValue, spec: ModelSpec) -> Terms:
    if not isinstance(p, float) or not 0.0 <= p <= 1.0:
        return INVALID
    if spec.classes is not None and not any(same_label(truth, c) for c in spec.classes):
        return INVALID
    y = same_label(truth, spec.positive)
    decided = same_label(decision, spec.positive)
    counts = ["count", ("tp" if decided else "fn") if y else ("fp" if decided else "tn")]
    if y:
        counts.append("positives")
    if y == decided:
        counts.append("correct")
    # Exactly sklearn's arithmetic: columns (1 - p, p), clipped, one-hot truth.
    q = p if y else 1.0 - p
    log_loss = -math.log(min(max(q, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS))
    y1 = 1.0 if y else 0.0
    # Squares as products: correctly rounded, like numpy's (x ** 2 goes through libm pow).
    a, b = (1.0 - y1) - (1.0 - p), y1 - p
    brier = 0.5 * (a * a + b * b)
    rel = reliability_bin(p)
    return Terms(
        tuple(counts),
        (("log_loss", log_loss), ("brier", brier), ("score", p), (f"rel_score_{rel}", p)),
        (("pos" if y else "neg", logit_bin(p)), ("rel_n", rel))
        + ((("rel_pos", rel),) if y else ()),
    )


def _multiclass(probs: Score, decision: LabelValue, truth: LabelValue) -> Terms:
    if not isinstance(probs, dict):
        return INVALID
    # Score keys are strings in JSON; a class missing from the score has probability 0.
    p = probs.get(str(truth), 0.0)
    log_loss = -math.log(min(max(p, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS))
    correct = same_label(decision, truth)
    return Terms(("count", "correct") if correct else ("count",), (("log_loss", log_loss),))


def _regression(y_pred: Score, truth: LabelValue) -> Terms:
    if not isinstance(y_pred, float) or isinstance(truth, str):
        return INVALID
    y = float(truth)
    abs_err = abs(y_pred - y)
    diff = y - y_pred
    sq_err = diff * diff  # unlike ** it overflows to inf instead of raising
    if not sq_err <= MAX_TERM:
        # Absurd values would overflow the exact sums; they are data errors anyway.
        return INVALID
    if y == 0.0:
        return Terms(("count",), (("abs_err", abs_err), ("sq_err", sq_err)))
    # sklearn divides by max(|y|, eps); zero truths are left out instead of dividing
    # by eps, which would let one zero swamp the figure.
    ape = abs_err / max(abs(y), sys.float_info.epsilon)
    sums = (("abs_err", abs_err), ("sq_err", sq_err), ("ape", ape))
    return Terms(("count", "mape_count"), sums)


def logit_bin(p: float) -> int:
    q = min(max(p, LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return round((math.log(q) - math.log1p(-q)) * LOGIT_SCALE)


def psi_bin(value: float, edges: Sequence[float]) -> int:
    """Reference bin of ``value`` as numpy.histogram places it (last bin closed);
    values beyond the edges go to the end bins, since drift out of range must count."""
    return min(max(bisect_right(edges, value) - 1, 0), len(edges) - 2)
