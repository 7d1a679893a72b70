"""LightGBM's scikit-learn estimators scored through their Booster, to the same bits.

``LGBMClassifier.predict_proba`` rebuilds its prediction parameters on every call
(``get_params``, which inspects signatures and deep-copies them): about 1.5 ms a call on
the loaded 2-core development machine, against 0.1 ms for the Booster's own prediction
of 20 rows. A worker calls it once a batch, and at a steady load batches are small, so
that overhead was most of LightGBM's time. ``LightgbmFast`` works out the same
parameters once, at load, with the estimator's own code, and then calls
``Booster.predict`` as the estimator does, turning a binary result into two columns as
``predict_proba`` does (tests/unit/model/test_lightgbm_fast.py holds the bits equal).

Only for the worker's float64 matrices (an estimator fitted on a DataFrame keeps its own
path, which checks the column names), and not for a custom objective (its output is a
raw score, with a warning, which the estimator's path keeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from worker.model.runtimes import FloatArray, class_path

CLASSIFIER: Final = "lightgbm.sklearn.LGBMClassifier"
REGRESSOR: Final = "lightgbm.sklearn.LGBMRegressor"
#: Arguments of ``Booster.predict`` itself, which the estimator drops from its parameters.
ARGUMENTS: Final = ("data", "X", "raw_score", "start_iteration", "num_iteration",
                    "pred_leaf", "pred_contrib")


@dataclass(frozen=True, slots=True)
class LightgbmFast:
    booster: Any
    params: dict[str, Any]  # the estimator's prediction parameters, worked out at load
    two_columns: bool  # a binary classifier: (1 - p, p), as predict_proba returns

    def __call__(self, matrix: Any) -> FloatArray:
        result = np.asarray(self.booster.predict(matrix, **self.params))
        return np.vstack((1.0 - result, result)).transpose() if self.two_columns else result


def lightgbm_fast(estimator: Any) -> LightgbmFast | None:
    """The fast path for a fitted LGBMClassifier or LGBMRegressor, else None."""
    kind = class_path(estimator)
    if kind not in (CLASSIFIER, REGRESSOR) or callable(getattr(estimator, "objective", None)):
        return None
    try:  # what LGBMModel.predict works out on every call, with its own helpers
        from lightgbm.basic import _choose_param_value, _ConfigAliases

        params = estimator._process_params(stage="predict")
        for alias in _ConfigAliases.get_by_alias(*ARGUMENTS):
            params.pop(alias, None)
        params = _choose_param_value("num_threads", params, estimator.n_jobs)
        params["num_threads"] = estimator._process_n_jobs(params["num_threads"])
        booster = estimator.booster_
    except (ImportError, AttributeError, TypeError):  # another LightGBM: its own path
        return None
    two_columns = kind == CLASSIFIER and int(estimator.n_classes_) == 2
    return LightgbmFast(booster, params, two_columns)
