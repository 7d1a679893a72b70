"""Reasons of an XGBoost model (XGBClassifier, XGBRegressor) from XGBoost itself:
``Booster.predict(DMatrix, pred_contribs=True)``, its own path-dependent TreeSHAP in C++.

XGBoost returns one column per feature and, last, the bias (the expected margin): their sum
is the row's margin (``output_margin``: log-odds for ``binary:logistic``, the value for
``reg:squarederror``). XGBoost computes in float32, so they add up to its margin within
float32 rounding (about 1e-7 of the margin's size; the check at load allows 1e-6 in the
probability). The DMatrix takes the model's own ``missing`` value, and the best iteration is
used when the model was fit with early stopping, as ``predict`` does. Objectives whose
output is not their margin's identity or logistic function are refused at load (check.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.explain import Contributions, Output


def accepts(model: Any) -> bool:
    return type(model).__module__.startswith("xgboost.") and hasattr(model, "get_booster")


@dataclass(frozen=True, slots=True)
class XGBoostExplainer:
    output: Output
    booster: Any
    missing: float
    #: (0, 0): every tree; else (0, best iteration + 1).
    iterations: tuple[int, int]

    def contributions(self, matrix: Any) -> Contributions:
        import xgboost  # loaded with the model already

        data = xgboost.DMatrix(matrix, missing=self.missing)
        return Contributions.bias_last(self.booster.predict(
            data, pred_contribs=True, iteration_range=self.iterations))


def explain(model: Any, task: str) -> XGBoostExplainer:
    """The explainer of a fitted XGBoost model of ``task`` (binary or regression)."""
    best = getattr(model, "best_iteration", None)
    missing = model.missing if model.missing is not None else np.nan
    return XGBoostExplainer(Output.RAW if task == "regression" else Output.LOG_ODDS,
                            model.get_booster(), float(missing),
                            (0, 0) if best is None else (0, int(best) + 1))
