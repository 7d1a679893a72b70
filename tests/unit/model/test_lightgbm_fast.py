"""LightGBM estimators scored through their Booster (worker/model/runtimes/lightgbm_fast.py):
the same bits as predict_proba/predict, at model_threads, and the estimator's own path
where the fast one does not apply."""

from __future__ import annotations

from pathlib import Path

import lightgbm  # the dev extra (pyproject.toml)
import numpy as np
import pytest

from tests.unit.helpers import save, training_data
from worker.model.bundle import load_bundle
from worker.model.runtimes.lightgbm_fast import LightgbmFast, lightgbm_fast


@pytest.mark.parametrize("rows", [1, 9, 400])
def test_a_loaded_lightgbm_classifier_scores_the_same_bits(tmp_path: Path, rows: int) -> None:
    x, y = training_data(n=800, seed=3)
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(x, y)
    bundle = load_bundle(save(tmp_path, model, fmt="joblib"), allow_pickle=True, threads=1)
    fast = bundle.runtime.fast
    assert isinstance(fast, LightgbmFast) and fast.params["num_threads"] == 1
    batch = training_data(n=rows, seed=10)[0]
    batch[0, 1] = np.nan  # LightGBM's own handling of a missing value, both ways
    assert np.array_equal(bundle.runtime.predict(batch), model.predict_proba(batch))


def test_multiclass_and_regression_match_and_threads_follow_n_jobs() -> None:
    x, y = training_data(n=600, seed=4)
    three = (x[:, 0] > 0.5).astype(int) + y
    classifier = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=3).fit(x, three)
    fast = lightgbm_fast(classifier)
    assert fast is not None and fast.params["num_threads"] == 3
    assert np.array_equal(fast(x), classifier.predict_proba(x))
    regressor = lightgbm.LGBMRegressor(n_estimators=10, verbose=-1).fit(x, x[:, 0])
    fast = lightgbm_fast(regressor)
    assert fast is not None and np.array_equal(fast(x), regressor.predict(x))


def test_a_custom_objective_keeps_the_estimators_path() -> None:
    x, y = training_data(n=300)

    def squared(target: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return score - target, np.ones_like(score)

    model = lightgbm.LGBMRegressor(n_estimators=3, objective=squared, verbose=-1)
    assert lightgbm_fast(model.fit(x, y.astype(float))) is None
