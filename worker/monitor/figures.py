"""Figures of a ``WindowAgg``, equal to sklearn.metrics on the same events.

Undefined figures are None rather than 0: precision without predicted
positives, recall without true positives, f1 when tp + fp + fn == 0 (exactly
where sklearn would raise UndefinedMetricWarning with ``zero_division="warn"``),
ROC AUC with one class only, PSI without a reference histogram.

log_loss is defined with one class too (it is sklearn's value with
``labels=[negative, positive]``). MAPE averages over non-zero true values only
(sklearn's formula on that subset).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from worker.model.manifest import ReferenceHistogram
from worker.monitor import exactsum

if TYPE_CHECKING:
    from worker.monitor.aggregate import WindowAgg

Figure = int | float | None

METRIC_NAMES: Final = (
    "count", "positives", "predicted", "expired", "invalid", "coverage", "accuracy",
    "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "mean_score",
    "positive_rate", "psi", "mae", "rmse", "mape",
)  # fmt: skip
# PSI describes every prediction, labeled or not; the others need labels.
PREDICTION_METRICS: Final = frozenset({"psi", "coverage", "predicted"})
PSI_EPSILON: Final = 1e-4


def metrics(agg: WindowAgg, reference: ReferenceHistogram | None = None) -> dict[str, Figure]:
    """Every name of METRIC_NAMES, None where undefined or not of this task."""
    c = agg.counts
    n, predicted = c.get("count", 0), c.get("predicted", 0)
    out: dict[str, Figure] = dict.fromkeys(METRIC_NAMES)
    out.update(count=n, predicted=predicted, expired=c.get("expired", 0),
               invalid=c.get("invalid", 0), coverage=_ratio(n, predicted))  # fmt: skip
    if agg.task in ("binary", "regression") and reference is not None:
        out["psi"] = psi(agg.hists.get("psi", {}), reference.counts)
    if agg.task == "binary":
        out.update(_binary(agg))
    elif agg.task == "multiclass":
        out.update(accuracy=_ratio(c.get("correct", 0), n), log_loss=_mean(agg, "log_loss"))
    elif agg.task == "regression":
        sq = _mean(agg, "sq_err")
        out.update(mae=_mean(agg, "abs_err"), rmse=None if sq is None else math.sqrt(sq),
                   mape=_mean(agg, "ape", "mape_count"))  # fmt: skip
    return out


def _binary(agg: WindowAgg) -> dict[str, Figure]:
    c = agg.counts
    n = c.get("count", 0)
    tp, fp, fn = c.get("tp", 0), c.get("fp", 0), c.get("fn", 0)
    return {
        "positives": c.get("positives", 0),
        "accuracy": _ratio(c.get("correct", 0), n),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": roc_auc(agg.hists.get("pos", {}), agg.hists.get("neg", {})),
        "log_loss": _mean(agg, "log_loss"),
        "brier": _mean(agg, "brier"),
        "mean_score": _mean(agg, "score"),
        "positive_rate": _ratio(c.get("positives", 0), n),
    }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _mean(agg: WindowAgg, name: str, count: str = "count") -> float | None:
    n = agg.counts.get(count, 0)
    return exactsum.value(agg.sums.get(name, ())) / n if n else None


def roc_auc(pos: Mapping[int, int], neg: Mapping[int, int]) -> float | None:
    """Mann-Whitney AUC over binned scores; a positive and a negative in the same bin
    count as a tie (1/2). Kept in integers (twice the numerator) until the division."""
    n_pos, n_neg = sum(pos.values()), sum(neg.values())
    if not n_pos or not n_neg:
        return None
    below = twice = 0
    for key in sorted(pos.keys() | neg.keys()):
        p, q = pos.get(key, 0), neg.get(key, 0)
        twice += p * (2 * below + q)
        below += q
    return twice / (2 * n_pos * n_neg)


def psi(actual: Mapping[int, int], expected: Sequence[float]) -> float | None:
    """Population stability index, sum of (a_i - e_i) * ln(a_i / e_i) over the
    reference bins, a and e being proportions of this window and of the reference.

    A bin empty on either side would make the term infinite, so its proportion is
    taken as PSI_EPSILON (1e-4) instead; the other proportions are left as they are.
    """
    n_actual, n_expected = sum(actual.values()), math.fsum(expected)
    if not n_actual or n_expected <= 0:
        return None
    terms = []
    for i, count in enumerate(expected):
        a = actual.get(i, 0) / n_actual or PSI_EPSILON
        e = count / n_expected or PSI_EPSILON
        terms.append((a - e) * math.log(a / e))
    return math.fsum(terms)
