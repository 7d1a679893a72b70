"""Every window metric, defined once: its terms, its figure, its gauge, its record field.

A ``MetricDef`` says which aggregate terms it reads (counters, exact sums and
histograms that ``terms.py`` produces per event), how its figure is computed from
a ``WindowAgg``, which Prometheus gauge exports it, and whether it is a count or a
ratio in the model-metrics record. ``metrics()``, the records, the alert rules and
the gauges all iterate ``CATALOG``, so a new metric is one entry here (plus its
field in schemas/model_metrics.schema.json and a dashboard panel; tests check both).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from worker.model.manifest import ReferenceHistogram
from worker.monitor import estimate as est
from worker.monitor.aggregate import WindowAgg
from worker.monitor.figures import Figure, mean, psi, ratio, roc_auc

Compute = Callable[[WindowAgg, ReferenceHistogram | None], Figure]
BINARY: Final = frozenset({"binary"})
CLASSIFIERS: Final = frozenset({"binary", "multiclass"})
REGRESSION: Final = frozenset({"regression"})


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One figure of a window."""

    name: str  # field of the model-metrics record, and what alert rules name
    #: The tasks it is defined for (None in the record otherwise); None: every aggregate.
    tasks: frozenset[str] | None
    compute: Compute
    terms: tuple[str, ...]  # the aggregate's counters, sums and histograms it reads
    gauge: str | None  # Prometheus gauge per model, version and window; None: not exported
    help: str
    #: True: a count, always an integer in the record (0 rather than null).
    count: bool = False
    #: True: describes every prediction (alert basis "predicted"); False: needs labels.
    unlabeled: bool = False


def _count(name: str) -> Compute:
    return lambda agg, _ref: agg.counts.get(name, 0)


def _psi(agg: WindowAgg, reference: ReferenceHistogram | None) -> Figure:
    return None if reference is None else psi(agg.hists.get("psi", {}), reference.counts)


def _rmse(agg: WindowAgg, _ref: ReferenceHistogram | None) -> Figure:
    sq = mean(agg, "sq_err")
    return None if sq is None else math.sqrt(sq)


def _c(agg: WindowAgg, name: str) -> int:
    return agg.counts.get(name, 0)


def _precision(a: WindowAgg, _r: object) -> Figure:
    return ratio(_c(a, "tp"), _c(a, "tp") + _c(a, "fp"))


def _recall(a: WindowAgg, _r: object) -> Figure:
    return ratio(_c(a, "tp"), _c(a, "tp") + _c(a, "fn"))


def _f1(a: WindowAgg, _r: object) -> Figure:
    return ratio(2 * _c(a, "tp"), 2 * _c(a, "tp") + _c(a, "fp") + _c(a, "fn"))


def _accuracy(a: WindowAgg, _r: object) -> Figure:
    return ratio(_c(a, "correct"), _c(a, "count"))


def _roc_auc(a: WindowAgg, _r: object) -> Figure:
    return roc_auc(a.hists.get("pos", {}), a.hists.get("neg", {}))


_EST: Final = ("est_count", "est_pos", "est_tp", "est_alerts")
_REALIZED_TERMS: Final = {"precision": ("tp", "fp"), "recall": ("tp", "fn"),
                          "f1": ("tp", "fp", "fn"), "accuracy": ("correct", "count"),
                          "roc_auc": ("pos", "neg")}


def _gap(name: str, realized: Compute, estimated: Compute) -> MetricDef:
    return MetricDef(f"est_gap_{name}", BINARY, est.gap(realized, estimated),
                     (*_REALIZED_TERMS[name], *(("est_auc",) if name == "roc_auc" else _EST)),
                     f"scoring_model_est_gap_{name}_ratio",
                     f"Realized minus estimated {name} (negative: worse than the scores "
                     "promised).")


CATALOG: Final[tuple[MetricDef, ...]] = (
    MetricDef("count", None, _count("count"), ("count",), "scoring_model_labeled_events",
              "Labeled predictions in the window.", count=True),
    MetricDef("positives", BINARY, _count("positives"), ("positives",),
              "scoring_model_positive_events", "Labeled positives in the window."),
    MetricDef("predicted", None, _count("predicted"), ("predicted",),
              "scoring_model_predicted_events", "Predictions in the window.", count=True,
              unlabeled=True),
    MetricDef("expired", None, _count("expired"), ("expired",),
              "scoring_model_expired_events", "Predictions whose label never came.", count=True),
    MetricDef("invalid", None, _count("invalid"), ("invalid",), None,
              "Labeled predictions that could not be scored as the task requires.", count=True),
    MetricDef("coverage", None, lambda a, _r: ratio(_c(a, "count"), _c(a, "predicted")),
              ("count", "predicted"), "scoring_model_label_coverage_ratio",
              "Labeled predictions / predictions.", unlabeled=True),
    MetricDef("accuracy", CLASSIFIERS, _accuracy,
              ("correct", "count"), "scoring_model_accuracy_ratio", "Accuracy of the decisions."),
    MetricDef("precision", BINARY, _precision, ("tp", "fp"), "scoring_model_precision_ratio",
              "Precision of the positive decisions."),
    MetricDef("recall", BINARY, _recall,
              ("tp", "fn"), "scoring_model_recall_ratio", "Recall of the positive class."),
    MetricDef("f1", BINARY, _f1,
              ("tp", "fp", "fn"), "scoring_model_f1_ratio", "F1 score of the positive class."),
    MetricDef("roc_auc", BINARY, _roc_auc,
              ("pos", "neg"), "scoring_model_roc_auc_ratio", "ROC AUC of the scores."),
    MetricDef("log_loss", CLASSIFIERS, lambda a, _r: mean(a, "log_loss"), ("log_loss", "count"),
              "scoring_model_log_loss", "Mean log loss of the scores."),
    MetricDef("brier", BINARY, lambda a, _r: mean(a, "brier"), ("brier", "count"),
              "scoring_model_brier_score", "Brier score (mean squared error of the scores)."),
    MetricDef("mean_score", BINARY, lambda a, _r: mean(a, "score"), ("score", "count"),
              "scoring_model_mean_score", "Mean score of labeled predictions."),
    MetricDef("positive_rate", BINARY, lambda a, _r: ratio(_c(a, "positives"), _c(a, "count")),
              ("positives", "count"), "scoring_model_positive_rate_ratio",
              "Share of positive true labels."),
    MetricDef("psi", frozenset({"binary", "regression"}), _psi, ("psi",),
              "scoring_model_score_psi", "Population stability index against the reference.",
              unlabeled=True),
    MetricDef("mae", REGRESSION, lambda a, _r: mean(a, "abs_err"), ("abs_err", "count"),
              "scoring_model_mae", "Mean absolute error (regression)."),
    MetricDef("rmse", REGRESSION, _rmse, ("sq_err", "count"), "scoring_model_rmse",
              "Root mean squared error (regression)."),
    MetricDef("mape", REGRESSION, lambda a, _r: mean(a, "ape", "mape_count"),
              ("ape", "mape_count"), "scoring_model_mape_ratio",
              "Mean absolute percentage error (regression)."),
    # Estimated from every prediction's calibrated score (worker/monitor/estimate.py);
    # null for a bundle without a calibration map.
    MetricDef("est_positives", BINARY, est.est_positives, ("est_count", "est_pos"),
              "scoring_model_est_positive_events",
              "Expected positives among the window's predictions.", unlabeled=True),
    MetricDef("est_alert_rate", BINARY, est.est_alert_rate, ("est_count", "est_alerts"),
              "scoring_model_est_alert_rate_ratio", "Share of predictions decided positive.",
              unlabeled=True),
    MetricDef("est_precision", BINARY, est.est_precision, _EST,
              "scoring_model_est_precision_ratio", "Estimated precision (before labels).",
              unlabeled=True),
    MetricDef("est_recall", BINARY, est.est_recall, _EST, "scoring_model_est_recall_ratio",
              "Estimated recall (before labels).", unlabeled=True),
    MetricDef("est_f1", BINARY, est.est_f1, _EST, "scoring_model_est_f1_ratio",
              "Estimated F1 (before labels).", unlabeled=True),
    MetricDef("est_accuracy", BINARY, est.est_accuracy, _EST,
              "scoring_model_est_accuracy_ratio", "Estimated accuracy (before labels).",
              unlabeled=True),
    MetricDef("est_roc_auc", BINARY, est.est_roc_auc, ("est_auc",),
              "scoring_model_est_roc_auc_ratio", "Estimated ROC AUC (before labels).",
              unlabeled=True),
    _gap("precision", _precision, est.est_precision),
    _gap("recall", _recall, est.est_recall),
    _gap("f1", _f1, est.est_f1),
    _gap("accuracy", _accuracy, est.est_accuracy),
    _gap("roc_auc", _roc_auc, est.est_roc_auc),
    MetricDef("ece", BINARY, est.ece, ("rel_n", "rel_pos"), "scoring_model_ece_ratio",
              "Expected calibration error of the labeled scores (10 bins)."),
)

BY_NAME: Final[Mapping[str, MetricDef]] = {m.name: m for m in CATALOG}
METRIC_NAMES: Final = tuple(m.name for m in CATALOG)
# PSI describes every prediction, labeled or not; the others need labels.
PREDICTION_METRICS: Final = frozenset(m.name for m in CATALOG if m.unlabeled)
COUNT_METRICS: Final = frozenset(m.name for m in CATALOG if m.count)


def metrics(agg: WindowAgg, reference: ReferenceHistogram | None = None) -> dict[str, Figure]:
    """Every name of METRIC_NAMES, None where undefined or not of this task."""
    return {
        m.name: m.compute(agg, reference) if m.tasks is None or agg.task in m.tasks else None
        for m in CATALOG
    }
