"""Forests scored tree by tree, checked once (worker/model/runtimes/forest.py): the same
bits as scikit-learn's own method, the same error on bad input, and scikit-learn's path
wherever the fast one does not apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)

from tests.unit.helpers import save, training_data
from worker.model.bundle import load_bundle
from worker.model.runtimes.forest import ForestFast, forest_fast


class MyForest(RandomForestClassifier):
    """A subclass may change how trees combine: it keeps scikit-learn's path."""


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_a_loaded_forest_scores_the_same_bits_as_predict_proba(tmp_path: Path,
                                                               rows: int) -> None:
    x, y = training_data(n=600, seed=1)
    forest = RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0).fit(x, y)
    bundle = load_bundle(save(tmp_path, forest))
    assert isinstance(bundle.runtime.fast, ForestFast)
    batch = training_data(n=rows, seed=9)[0]
    assert np.array_equal(bundle.runtime.predict(batch), forest.predict_proba(batch))


def test_regressors_and_missing_values_match_too() -> None:
    x, y = training_data(n=500, seed=2)
    x[::7, 1] = np.nan  # forests learn where missing values go (scikit-learn >= 1.4)
    for model in (RandomForestRegressor(n_estimators=10, random_state=0),
                  ExtraTreesRegressor(n_estimators=10, random_state=0)):
        model.fit(x, y.astype(np.float64))
        fast = forest_fast(model, 1)
        assert fast is not None
        assert np.array_equal(fast(x), model.predict(x))
    classifier = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    fast = forest_fast(classifier, 1)
    assert fast is not None and np.array_equal(fast(x), classifier.predict_proba(x))


def test_bad_input_fails_with_scikit_learns_own_message() -> None:
    x, y = training_data()
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    fast = forest_fast(forest, 1)
    assert fast is not None
    for bad in (np.full((2, 3), np.inf), np.zeros((2, 4))):
        with pytest.raises(ValueError) as ours:
            fast(bad)
        with pytest.raises(ValueError) as theirs:
            forest.predict_proba(bad)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("model,threads", [
    (RandomForestClassifier(n_estimators=3, random_state=0), 2),  # its own pool, then
    (MyForest(n_estimators=3, random_state=0), 1),
    (GradientBoostingClassifier(n_estimators=3), 1),
])
def test_other_models_and_more_threads_keep_scikit_learns_path(model: Any,
                                                              threads: int) -> None:
    x, y = training_data()
    assert forest_fast(model.fit(x, y), threads) is None


def test_a_multi_output_forest_keeps_scikit_learns_path() -> None:
    x, y = training_data()
    forest = RandomForestClassifier(n_estimators=3, random_state=0)
    assert forest_fast(forest.fit(x, np.c_[y, 1 - y]), 1) is None
