"""The DataFrame-fed scikit-learn runtime: for estimators fitted on a pandas DataFrame.

Such an estimator selects columns by name (a ColumnTransformer given ``["country"]``)
and checks ``feature_names_in_`` against what it is given, so it must get a frame with
the manifest's column names, in order, typed as the manifest says; the scoring core
builds exactly that (worker/core/frames.py) when ``input`` is "frame". Loading, the
checks and the artifact formats are the scikit-learn runtime's
(worker/model/runtimes/sklearn.py), which picks this runtime at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.model.manifest import Task
from worker.model.runtimes import FloatArray
from worker.model.runtimes.sklearn import TOLERANCE


@dataclass(frozen=True, slots=True)
class SklearnFrameRuntime:
    estimator: Any
    task: Task
    input: str = "frame"
    tolerance: float = TOLERANCE

    @property
    def model(self) -> Any:
        return self.estimator

    def predict(self, matrix: Any) -> FloatArray:
        if self.task == "regression":
            return np.asarray(self.estimator.predict(matrix), dtype=np.float64)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)
