"""Only what a model needs: a worker serving an array model never imports pandas (though
scikit-learn would), one serving a frame model imports it when the model is loaded.
Each case runs in a fresh interpreter: this one has imported pandas long ago."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from tests.unit.helpers import FEATURES, ROOT, logistic, save, training_data

SERVE = """
import sys
from pathlib import Path
import orjson
from worker.model.checked import load_checked
from worker.model.runtimes.lazy import pandas_loaded
from worker.core.pipeline import ScoringContext, score_values
bundle = load_checked(Path(sys.argv[1]))
after_load = pandas_loaded()
values = [orjson.dumps({"id": str(i), "a": 0.5 * i, "b": 1.0, "c": -1.0}) for i in range(50)]
outcomes = score_values(values, ScoringContext(bundle), 0)
import sklearn.utils.fixes
print(orjson.dumps({"after_load": after_load, "after_scoring": pandas_loaded(),
                    "in_modules": "pandas" in sys.modules,
                    "scored": sum(type(o).__name__ == "Prediction" for o in outcomes),
                    "sklearn_df": repr(getattr(sklearn.utils.fixes, "pd").DataFrame)}).decode())
"""


def serve(folder: Path) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", SERVE, str(folder)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(orjson.loads(result.stdout.splitlines()[-1]))


def test_an_array_model_is_served_without_pandas(tmp_path: Path) -> None:
    seen = serve(save(tmp_path, logistic()))
    assert seen["scored"] == 50
    assert seen["after_load"] is False
    assert seen["after_scoring"] is False
    # ... until scikit-learn itself reads an attribute of pandas (here, by this script):
    assert seen["sklearn_df"] == "<class 'pandas.DataFrame'>"


def test_a_frame_model_imports_pandas_when_it_is_loaded(tmp_path: Path) -> None:
    x, y = training_data()
    frame = pd.DataFrame(x, columns=list(FEATURES))
    folder = save(tmp_path, LogisticRegression().fit(frame, y), features=FEATURES,
                  sample=frame.iloc[:20])
    seen = serve(folder)
    assert seen["scored"] == 50
    assert seen["after_load"] is True
    assert seen["in_modules"] is True


def test_an_array_fitted_column_pipeline_is_served_without_pandas(tmp_path: Path) -> None:
    """The demo model's shape: scikit-learn's ColumnTransformer.transform imports pandas
    on its first call; routed (worker/model/runtimes/routed.py) it is never called."""
    x, y = training_data()
    columns = ColumnTransformer([("abs", FunctionTransformer(np.abs), [0])],
                                remainder="passthrough")
    model = make_pipeline(columns, StandardScaler(), LogisticRegression()).fit(x, y)
    seen = serve(save(tmp_path, model))
    assert seen["scored"] == 50
    assert seen["after_load"] is False
    assert seen["after_scoring"] is False
