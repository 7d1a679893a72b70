"""Reasons of a LightGBM model (LGBMClassifier, LGBMRegressor) from LightGBM itself:
``predict(X, pred_contrib=True)``, its own path-dependent TreeSHAP in C++, one call per batch.

LightGBM returns one column per feature and, last, the expected value: the row's raw score
(log-odds for a binary classifier, the value for regression with an identity link) is their
sum, exactly. The best iteration is used when the model has one, as ``predict`` does. A
regressor with a log link (poisson, gamma, tweedie) adds up to the log of its prediction,
not to the prediction: the load-time check (check.py) refuses it in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.explain import Contributions, Output


def accepts(model: Any) -> bool:
    return type(model).__module__.startswith("lightgbm.") and hasattr(model, "booster_")


@dataclass(frozen=True, slots=True)
class LightGBMExplainer:
    output: Output
    model: Any

    def contributions(self, matrix: Any) -> Contributions:
        return Contributions.bias_last(self.model.predict(matrix, pred_contrib=True))


def explain(model: Any, task: str) -> LightGBMExplainer:
    """The explainer of a fitted LightGBM model of ``task`` (binary or regression)."""
    return LightGBMExplainer(Output.RAW if task == "regression" else Output.LOG_ODDS, model)
