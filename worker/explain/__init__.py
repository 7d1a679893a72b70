"""The explainer seam: why a model gave each prediction its score, per input feature.

An ``Explainer`` turns a batch of the runtime's input into ``Contributions``: one signed
number per row and input feature (the manifest's features, in order) and a baseline per
row, such that baseline + the row's contributions = the model's additive output for that
row (``Output``): log-odds for linear and boosted classifiers, the probability for random
forests (which average probabilities), the value for regression. One module per kind of
model: linear.py (exact, coefficients times the distance from the reference mean), trees.py
(path-dependent TreeSHAP through the optional ``shap``), lightgbm_contrib.py and
xgboost_contrib.py (the boosters' own TreeSHAP), piped.py (a Pipeline ending in a tree
model: explained in the transformed space, summed back into input features).
``explainer_for`` chooses by the model when the model loads, checks that the contributions
add up to the model's own output on the bundle's reference rows (check.py), and refuses, in
one line, a model it cannot explain exactly.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from worker.core.features import estimator_input
from worker.core.frames import as_frame
from worker.errors import ConfigError
from worker.model.bundle import ModelBundle

FloatArray = npt.NDArray[np.float64]


class ExplainError(ConfigError):
    """``--explain`` cannot be honoured for this model; the message is one line."""

    hint = "see docs/running/reasons.md for the models --explain supports"


class Output(StrEnum):
    """What baseline + contributions add up to."""

    LOG_ODDS = "log_odds"
    PROBABILITY = "probability"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class Contributions:
    """``values[i, j]``: feature j's signed contribution to row i; ``baseline[i]`` + the
    sum of row i = the model's ``Output`` for row i."""

    baseline: FloatArray
    values: FloatArray

    @classmethod
    def bias_last(cls, raw: Any) -> Contributions:
        """From a booster's own contributions, one column per feature and the bias last
        (LightGBM's ``pred_contrib``, XGBoost's ``pred_contribs``)."""
        matrix = np.asarray(raw, dtype=np.float64)
        return cls(matrix[:, -1].copy(), matrix[:, :-1])


class Explainer(Protocol):
    """Contributions of a loaded model's input features, a whole batch at once."""

    @property
    def output(self) -> Output:
        """What the contributions add up to."""

    def contributions(self, matrix: Any) -> Contributions:
        """The contributions of every row of ``matrix`` (what the runtime's ``predict``
        takes)."""


def explainer_for(bundle: ModelBundle) -> Explainer:
    """The explainer of ``bundle``'s model; ExplainError when there is none."""
    if bundle.task == "multiclass":
        raise ExplainError("--explain: multiclass models are not explained "
                           "(binary classifiers and regression only)")
    if bundle.manifest.runtime != "sklearn":
        raise ExplainError(f"--explain: models served by the {bundle.manifest.runtime} "
                           "runtime are not explained; serve the scikit-learn artifact")
    from worker.explain import check, linear, piped  # scikit-learn is loaded by now

    model = bundle.estimator
    if linear.is_linear(model):
        return _framed(bundle, linear.build(bundle))
    explainer: Explainer
    if type(model).__name__ == "Pipeline":
        explainer = _framed(bundle, piped.build(bundle))
    else:
        found = tree_explainer(model, bundle.task, bundle.positive_index)
        if found is None:
            raise ExplainError(f"--explain: no explainer for {type(model).__name__} (linear "
                               "models, tree ensembles, LightGBM, XGBoost, and pipelines "
                               "ending in one of them only)")
        explainer = found
    check.adds_up(bundle, explainer)
    return explainer


@dataclass(frozen=True, slots=True)
class FramedExplainer:
    """An explainer of a model fitted on a DataFrame that the runtime scores from typed
    columns (worker/model/runtimes/routed.py): its pipeline's transforms take the frame."""

    inner: Explainer

    @property
    def output(self) -> Output:
        return self.inner.output

    def contributions(self, matrix: Any) -> Contributions:
        return self.inner.contributions(as_frame(matrix))


def _framed(bundle: ModelBundle, explainer: Explainer) -> Explainer:
    differs = estimator_input(bundle.runtime) != bundle.runtime.input
    return FramedExplainer(explainer) if differs else explainer


def tree_explainer(model: Any, task: str, positive: int | None) -> Explainer | None:
    """The explainer of a fitted tree ensemble (LightGBM and XGBoost by their own
    contributions, scikit-learn's by shap), None for any other model."""
    from worker.explain import lightgbm_contrib, trees, xgboost_contrib

    if lightgbm_contrib.accepts(model):
        return lightgbm_contrib.explain(model, task)
    if xgboost_contrib.accepts(model):
        return xgboost_contrib.explain(model, task)
    if trees.is_tree_ensemble(model):
        return trees.explain(model, task, positive)
    return None
