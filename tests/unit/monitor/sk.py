"""sklearn reference figures for the same events, with None where sklearn warns."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from worker.monitor.views import Outcome


def or_none(fn: Callable[[], float]) -> float | None:
    """sklearn's value, or None where it raises UndefinedMetricWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn()
    if any(issubclass(w.category, UndefinedMetricWarning) for w in caught):
        return None
    return float(value)


def binary_reference(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    y = np.array([int(o.true_label) for o in outcomes])
    p = np.array([float(o.prediction.score) for o in outcomes])  # type: ignore[arg-type]
    d = np.array([int(o.prediction.label) for o in outcomes])
    both = len(set(y.tolist())) == 2
    return {
        "count": len(y),
        "positives": int(y.sum()),
        "accuracy": float(skm.accuracy_score(y, d)),
        "precision": or_none(lambda: skm.precision_score(y, d, zero_division="warn")),
        "recall": or_none(lambda: skm.recall_score(y, d, zero_division="warn")),
        "f1": or_none(lambda: skm.f1_score(y, d, zero_division="warn")),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else None,
        "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
        "mean_score": float(np.mean(p)),
        "positive_rate": float(np.mean(y)),
    }


def regression_reference(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    y = np.array([float(o.true_label) for o in outcomes])
    yhat = np.array([float(o.prediction.score) for o in outcomes])  # type: ignore[arg-type]
    nz = y != 0
    return {
        "count": len(y),
        "mae": float(skm.mean_absolute_error(y, yhat)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y, yhat))),
        "mape": float(skm.mean_absolute_percentage_error(y[nz], yhat[nz])) if nz.any() else None,
    }


def multiclass_reference(outcomes: Sequence[Outcome], classes: Sequence[str]) -> dict[str, Any]:
    labels = sorted(classes)  # sklearn orders probability columns by sorted labels
    y = [str(o.true_label) for o in outcomes]
    probs = np.array([[o.prediction.score[c] for c in labels]  # type: ignore[index]
                      for o in outcomes])
    d = [str(o.prediction.label) for o in outcomes]
    return {
        "count": len(y),
        "accuracy": float(skm.accuracy_score(y, d)),
        "log_loss": float(skm.log_loss(y, probs, labels=labels)),
    }


def psi_reference(
    values: Sequence[float], edges: Sequence[float], expected: Sequence[float]
) -> float:
    """PSI by numpy: values clamped into the reference range, proportions with 1e-4 floors."""
    clamped = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    actual, _ = np.histogram(clamped, np.asarray(edges))
    a = actual / actual.sum()
    e = np.asarray(expected, dtype=np.float64) / np.sum(expected)
    a = np.where(a == 0, 1e-4, a)
    e = np.where(e == 0, 1e-4, e)
    return float(np.sum((a - e) * np.log(a / e)))
