"""What one event adds to the windows it falls in, computed once per event.

The arithmetic follows sklearn.metrics exactly (same clipping, same order of
operations per event), so that sums of these terms give sklearn's figures.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from worker.monitor.views import ModelSpec, Outcome, PredictionView, same_label

# sklearn's log_loss clips probabilities to [eps, 1 - eps] with eps of float64.
LOG_LOSS_EPS: Final = sys.float_info.epsilon
# Logit bins of width 1/200: about 0.5 % relative in score below 0.01, where most
# fraud scores live, so same-bin ties barely move ROC AUC.
LOGIT_SCALE: Final = 200
LOGIT_CLIP: Final = 1e-12
MAX_TERM: Final = 1e290


@dataclass(frozen=True, slots=True)
class Terms:
    """Counters to increment by one, values to add to exact sums, histogram bins to bump."""

    counts: tuple[str, ...]
    sums: tuple[tuple[str, float], ...] = ()
    bins: tuple[tuple[str, int], ...] = ()


INVALID: Final = Terms(("invalid",))
EXPIRED: Final = Terms(("expired",))


def prediction_terms(pred: PredictionView, spec: ModelSpec) -> Terms:
    if spec.reference is not None and isinstance(pred.score, float):
        return Terms(("predicted",), bins=(("psi", psi_bin(pred.score, spec.reference.edges)),))
    return Terms(("predicted",))


def outcome_terms(outcome: Outcome, spec: ModelSpec) -> Terms:
    if spec.task == "binary":
        return _binary(outcome, spec)
    if spec.task == "multiclass":
        return _multiclass(outcome)
    return _regression(outcome)


def _binary(outcome: Outcome, spec: ModelSpec) -> Terms:
    p, truth = outcome.prediction.score, outcome.true_label
    if not isinstance(p, float) or not 0.0 <= p <= 1.0:
        return INVALID
    if spec.classes is not None and not any(same_label(truth, c) for c in spec.classes):
        return INVALID
    y = same_label(truth, spec.positive)
    decided = same_label(outcome.prediction.label, spec.positive)
    counts = ["count", ("tp" if decided else "fn") if y else ("fp" if decided else "tn")]
    if y:
        counts.append("positives")
    if y == decided:
        counts.append("correct")
    # Exactly sklearn's arithmetic: columns (1 - p, p), clipped, one-hot truth.
    q = p if y else 1.0 - p
    log_loss = -math.log(min(max(q, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS))
    y1 = 1.0 if y else 0.0
    brier = 0.5 * (((1.0 - y1) - (1.0 - p)) ** 2 + (y1 - p) ** 2)
    return Terms(
        tuple(counts),
        (("log_loss", log_loss), ("brier", brier), ("score", p)),
        (("pos" if y else "neg", logit_bin(p)),),
    )


def _multiclass(outcome: Outcome) -> Terms:
    probs, truth = outcome.prediction.score, outcome.true_label
    if not isinstance(probs, dict):
        return INVALID
    # Score keys are strings in JSON; a class missing from the score has probability 0.
    p = probs.get(str(truth), 0.0)
    log_loss = -math.log(min(max(p, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS))
    correct = same_label(outcome.prediction.label, truth)
    return Terms(("count", "correct") if correct else ("count",), (("log_loss", log_loss),))


def _regression(outcome: Outcome) -> Terms:
    y_pred, y = outcome.prediction.score, outcome.true_label
    if not isinstance(y_pred, float) or isinstance(y, str):
        return INVALID
    y = float(y)
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
