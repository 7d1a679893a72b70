"""A plain OneHotEncoder's dense output without its per-call checks
(worker/model/runtimes/onehot.py): the same bits as ``transform(x).toarray()`` for strings,
integers and floats, with unknown and missing values; the encoder's own error under
handle_unknown="error"; the encoder's own transform wherever the fast one does not apply."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from worker.devtools.demo import demo_estimator, sample_transactions
from worker.model.runtimes.onehot import OneHotFast, onehot_fast
from worker.model.runtimes.routed import routed_fast


def mixed(n: int, seed: int) -> np.ndarray:
    """Three string columns, as typed columns hold them (objects)."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.choice(["de", "fr", "us"], n).astype(object),
                            rng.choice(["web", "app", "pos", "atm", "moto"], n).astype(object),
                            rng.choice(["a", "b"], n).astype(object)])


def test_strings_with_unknown_and_missing_values_give_the_encoders_bits() -> None:
    rng = np.random.default_rng(1)
    train = rng.choice(["de", "fr", "us", "gb"], (400, 2)).astype(object)
    encoder = OneHotEncoder(handle_unknown="ignore").fit(train)
    fast = onehot_fast(encoder)
    assert isinstance(fast, OneHotFast)
    for rows in (1, 7, 300):
        x = rng.choice(["de", "fr", "us", "gb", "zz"], (rows, 2)).astype(object)
        x[::3, 1] = np.nan  # a missing string, as typed columns hold it
        x[::4, 0] = None
        assert np.array_equal(fast.transform(x), encoder.transform(x).toarray())


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_numbers_with_unknown_and_missing_values_give_the_encoders_bits(dtype: Any) -> None:
    encoder = OneHotEncoder(categories=[list(range(24))], handle_unknown="ignore",
                            sparse_output=False).fit(np.arange(24).reshape(-1, 1))
    fast = onehot_fast(encoder)
    assert fast is not None
    x = np.array([[0], [23], [7], [24], [-1], [3]], dtype=dtype)
    if dtype is np.float64:
        x = np.vstack([x, [[np.nan], [2.5], [5.0]]])
    assert np.array_equal(fast.transform(x), encoder.transform(x))


def test_several_columns_together() -> None:
    encoder = OneHotEncoder(handle_unknown="ignore").fit(mixed(300, 2))
    fast = onehot_fast(encoder)
    assert fast is not None
    x = mixed(50, 3)
    x[0, 0], x[1, 1], x[2, 2] = "zz", np.nan, "c"
    assert np.array_equal(fast.transform(x), encoder.transform(x).toarray())


def test_an_unknown_value_under_error_raises_the_encoders_own_error() -> None:
    encoder = OneHotEncoder().fit(mixed(300, 4))
    fast = onehot_fast(encoder)
    assert fast is not None
    known = mixed(20, 5)
    assert np.array_equal(fast.transform(known), encoder.transform(known).toarray())
    bad = known.copy()
    bad[3, 0] = "zz"
    with pytest.raises(ValueError) as ours:
        fast.transform(bad)
    with pytest.raises(ValueError) as theirs:
        encoder.transform(bad)
    assert str(ours.value) == str(theirs.value)


def test_a_column_of_another_dtype_takes_the_encoders_own_transform() -> None:
    encoder = OneHotEncoder(handle_unknown="ignore").fit(np.array([[1], [2], [3]]))
    fast = onehot_fast(encoder)
    assert fast is not None
    x = np.array([[1], [3], [2]], dtype=object)  # numbers as objects
    assert np.array_equal(fast.transform(x), encoder.transform(x).toarray())


@pytest.mark.parametrize("encoder", [
    OneHotEncoder(drop="first"),
    OneHotEncoder(min_frequency=5),
    OneHotEncoder(handle_unknown="infrequent_if_exist"),
    OneHotEncoder(dtype=np.float32),
])
def test_encoders_it_does_not_take_keep_their_own_transform(encoder: OneHotEncoder) -> None:
    assert onehot_fast(encoder.fit(mixed(300, 6))) is None


def test_categories_it_does_not_take_keep_the_encoders_own_transform() -> None:
    x = np.array([[1.0], [np.nan], [2.0]])  # a missing-value category
    assert onehot_fast(OneHotEncoder().fit(x)) is None
    strings = np.array([["a"], [None], ["b"]], dtype=object)
    assert onehot_fast(OneHotEncoder().fit(strings)) is None
    numbers = np.array([[1], [2], [3]], dtype=object)  # numbers as objects
    assert onehot_fast(OneHotEncoder().fit(numbers)) is None


def test_a_dense_column_pipeline_routes_its_encoders_through_the_fast_one() -> None:
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.integers(0, 4, 500), rng.normal(size=(500, 3))])
    y = (x[:, 1] + (x[:, 0] == 2) > 0).astype(int)
    model = Pipeline([("columns", ColumnTransformer([
        ("codes", OneHotEncoder(handle_unknown="ignore"), [0]),
        ("numbers", StandardScaler(), [1, 2, 3]),
    ])), ("model", LogisticRegression())]).fit(x, y)
    fast = routed_fast(model, "predict_proba")
    assert fast is not None and isinstance(fast.routes[0].transformer, OneHotFast)
    batch = np.column_stack([rng.integers(0, 6, 40), rng.normal(size=(40, 3))])
    assert np.array_equal(fast(batch), model.predict_proba(batch))
    demo_x, demo_y = sample_transactions(rng, 3000)
    demo = demo_estimator().fit(demo_x, demo_y)
    routed = routed_fast(demo, "predict_proba")
    assert routed is not None
    assert any(isinstance(r.transformer, OneHotFast) for r in routed.routes)
    assert np.array_equal(routed(demo_x[:500]), demo.predict_proba(demo_x[:500]))
