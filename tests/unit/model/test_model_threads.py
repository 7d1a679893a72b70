"""A loaded model's thread pools are at ``model_threads``: OpenMP and BLAS (threadpoolctl)
in the loading thread and in each thread that scores, ``n_jobs`` of estimators that run
a pool of their own, onnxruntime's intra-op pool."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from tests.unit.helpers import save, training_data
from worker.config import Settings
from worker.model.bundle import load_bundle
from worker.model.runtimes.threads import limit_estimator


def pools(api: str) -> set[int]:
    """The thread counts of the calling thread's loaded ``api`` libraries."""
    return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == api}


def scored_in_new_thread(bundle: Any, x: Any) -> set[int]:
    seen: set[int] = set()

    def score() -> None:
        bundle.runtime.predict(x)
        seen.update(pools("openmp"))

    thread = threading.Thread(target=score)
    thread.start()
    thread.join()
    return seen


@pytest.mark.parametrize("threads", [1, 2])
def test_a_loaded_tree_models_pools_are_at_model_threads(tmp_path: Path, threads: int) -> None:
    x, y = training_data()
    folder = save(tmp_path, HistGradientBoostingClassifier(max_iter=3).fit(x, y))
    with threadpool_limits(limits=7):  # a machine's default, whatever it is; restored after
        assert pools("openmp") == {7}
        bundle = load_bundle(folder, threads=threads)
        assert pools("openmp") == {threads}  # the loading thread
        assert pools("blas") <= {threads}
        # libgomp keeps the limit per thread: a thread that scores gets it on its first batch.
        assert scored_in_new_thread(bundle, x) == {threads}


def test_loading_sets_n_jobs_of_threaded_estimators_only(tmp_path: Path) -> None:
    x, y = training_data()
    columns = ColumnTransformer([("numbers", StandardScaler(), [0, 1, 2])], n_jobs=None)
    forest = RandomForestClassifier(n_estimators=3, n_jobs=-1, random_state=0)
    model = Pipeline([("columns", columns), ("forest", forest)]).fit(x, y)
    bundle = load_bundle(save(tmp_path, model), threads=2)
    steps = dict(bundle.estimator.steps)
    assert steps["forest"].n_jobs == 2
    assert steps["columns"].n_jobs is None  # its n_jobs starts processes: left alone
    np.testing.assert_allclose(bundle.runtime.predict(x), model.predict_proba(x))


def test_meta_estimators_fitted_inner_estimators_are_limited() -> None:
    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    forest = RandomForestClassifier(n_estimators=3, n_jobs=-1, random_state=0)
    model = StackingClassifier([("forest", forest)], LogisticRegression(), cv=2).fit(x, y)
    limit_estimator(model, 1)
    assert model.estimators_[0].n_jobs == 1


# skl2onnx writes a boolean where onnx 1.19 wants an int, once per tree node: 84 warnings.
@pytest.mark.filterwarnings("ignore:Field onnx.AttributeProto:DeprecationWarning")
def test_onnx_session_runs_model_threads_intra_op_threads(tmp_path: Path) -> None:
    x, y = training_data()
    folder = save(tmp_path, HistGradientBoostingClassifier(max_iter=3).fit(x, y),
                  runtime="onnx")
    session = load_bundle(folder, threads=3).runtime.model
    assert session.get_session_options().intra_op_num_threads == 3


def test_model_threads_is_a_setting_from_1_to_256() -> None:
    assert Settings().model_threads == 1
    assert Settings(model_threads=4).model_threads == 4
    for bad in (0, 257):
        with pytest.raises(Exception, match="model_threads"):
            Settings(model_threads=bad)


def test_a_loaded_lightgbm_predicts_with_model_threads(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import lightgbm

    x, y = training_data()
    model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=7, n_jobs=4, verbose=-1)
    bundle = load_bundle(save(tmp_path, model.fit(x, y), fmt="joblib"), threads=2,
                         allow_pickle=True)
    assert bundle.estimator.n_jobs == 2
    want = model.predict_proba(x)  # the model as fitted (4 threads), before the spy
    seen: list[int] = []
    predict = lightgbm.Booster.predict

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["num_threads"])  # what LightGBM hands its OpenMP loop
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(lightgbm.Booster, "predict", spy)
    np.testing.assert_allclose(bundle.runtime.predict(x), want)
    assert seen and set(seen) == {2}


def test_a_loaded_xgboost_boosters_nthread_is_model_threads(tmp_path: Path) -> None:
    import json

    import xgboost

    x, y = training_data()
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=3, n_jobs=4).fit(x, y)
    bundle = load_bundle(save(tmp_path, model, fmt="joblib"), threads=2, allow_pickle=True)
    assert bundle.estimator.n_jobs == 2
    # The booster itself, which predicts: its OpenMP thread count.
    config = json.loads(bundle.estimator.get_booster().save_config())
    assert config["learner"]["generic_param"]["nthread"] == "2"
    np.testing.assert_allclose(bundle.runtime.predict(x), model.predict_proba(x), rtol=1e-6)
