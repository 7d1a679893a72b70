"""Reasons of a tree ensemble: path-dependent TreeSHAP by ``shap``'s TreeExplainer (the
optional extra ``scoring-worker[explain]``; nothing of shap is imported without --explain).

Path-dependent TreeSHAP needs no background data: the trees' own training covers stand for
the reference. The contributions add up, with shap's expected value as the baseline, to the
ensemble's additive output: log-odds for HistGradientBoosting and GradientBoosting
classifiers, the probability for a RandomForest or ExtraTrees classifier (forests average
probabilities, and their log-odds is no sum over trees), the value for regressors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from worker.explain import Contributions, ExplainError, Output
from worker.model.bundle import ModelBundle

#: Forests: their additive output is the probability.
FORESTS: Final = frozenset({"RandomForestClassifier", "ExtraTreesClassifier",
                            "DecisionTreeClassifier"})
BOOSTED: Final = frozenset({"HistGradientBoostingClassifier", "GradientBoostingClassifier"})
REGRESSORS: Final = frozenset({"RandomForestRegressor", "ExtraTreesRegressor",
                               "DecisionTreeRegressor", "HistGradientBoostingRegressor",
                               "GradientBoostingRegressor"})
NO_SHAP: Final = ("--explain for tree models needs shap: pip install 'scoring-worker[explain]'")


def is_tree_ensemble(model: Any) -> bool:
    return type(model).__name__ in FORESTS | BOOSTED | REGRESSORS


@dataclass(frozen=True, slots=True)
class TreeExplainer:
    output: Output
    explainer: Any
    #: Which class's contributions (classifiers: the positive one); None: regression.
    positive: int | None
    base: float

    def contributions(self, matrix: Any) -> Contributions:
        values = np.asarray(self.explainer.shap_values(matrix, check_additivity=False),
                            dtype=np.float64)
        if values.ndim == 3:  # (rows, features, classes)
            values = values[:, :, self.positive]
        return Contributions(np.full(values.shape[0], self.base), values)


def build(bundle: ModelBundle) -> TreeExplainer:
    return explain(bundle.estimator, bundle.task, bundle.positive_index)


def explain(model: Any, task: str, positive_index: int | None) -> TreeExplainer:
    """The explainer of a fitted scikit-learn tree ensemble of ``task``."""
    try:
        import shap
    except ImportError:
        raise ExplainError(NO_SHAP) from None
    kind = type(model).__name__
    try:
        explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    except Exception as exc:  # shap raises plain Exceptions for models it cannot read
        raise ExplainError(f"--explain: shap cannot explain this {kind}: "
                           f"{' '.join(str(exc).split())[:200]}") from None
    positive = None if task == "regression" else positive_index
    expected = np.ravel(np.asarray(explainer.expected_value, dtype=np.float64))
    base = float(expected[positive] if positive is not None and expected.size > 1
                 else expected[0])
    if task == "regression":
        output = Output.RAW
    else:
        output = Output.PROBABILITY if kind in FORESTS else Output.LOG_ODDS
    return TreeExplainer(output, explainer, positive, base)
