"""ColumnTransformer pipelines fed arrays (worker/model/runtimes/routed.py): the same bits
as scikit-learn's own method on the frame, for the shapes fraud teams fit (one-hot
strings with missing and unseen values, imputed and scaled numbers, dropped columns,
sparse output, regression), and scikit-learn's path wherever the routes do not apply."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from worker.core.pipeline import ScoringContext
from worker.model.bundle import load_bundle
from worker.model.runtimes.routed import Routed, routed_fast
from worker.model.writer import write_bundle

STRINGS = ["country", "channel"]
NUMBERS = ["amount", "age", "score"]


def frame(n: int, seed: int, holes: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "country": rng.choice(["de", "fr", "us", "gb"], n).astype(object),
        "channel": rng.choice(["web", "app", "pos"], n).astype(object),
        "amount": rng.normal(50, 20, n), "age": rng.normal(40, 9, n),
        "score": rng.normal(size=n), "unused": rng.normal(size=n),
    })
    if holes:  # missing strings and numbers, and a category never seen in training
        df.loc[::5, "country"] = np.nan
        df.loc[::7, "amount"] = np.nan
        df.loc[3::11, "channel"] = "moto"
    y = ((df["score"] > 0) ^ (df["channel"] == "pos")).to_numpy().astype(np.int64)
    return df, y


def dense_pipeline() -> Pipeline:
    return Pipeline([("columns", ColumnTransformer([
        ("strings", OneHotEncoder(handle_unknown="ignore"), STRINGS),
        ("numbers", StandardScaler(), NUMBERS),
    ])), ("model", LogisticRegression(max_iter=500))])


def imputed_sparse_pipeline() -> Pipeline:
    strings = Pipeline([("fill", SimpleImputer(strategy="constant", fill_value="none")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore"))])
    numbers = Pipeline([("fill", SimpleImputer(strategy="median")), ("scale", MinMaxScaler())])
    return Pipeline([("columns", ColumnTransformer([
        ("strings", strings, STRINGS),
        ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
         ["channel"]),
        ("numbers", numbers, NUMBERS),
    ], sparse_threshold=1.0)), ("model", LogisticRegression(max_iter=500))])


def trees_pipeline() -> Pipeline:
    return Pipeline([("columns", ColumnTransformer([
        ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                   encoded_missing_value=-2), STRINGS),
        ("numbers", "passthrough", []),  # an empty selection gives nothing
    ], remainder="drop")), ("model", HistGradientBoostingClassifier(max_iter=20))])


@pytest.mark.parametrize("make,holes", [
    (dense_pipeline, False), (imputed_sparse_pipeline, True), (trees_pipeline, True),
])
@pytest.mark.parametrize("rows", [1, 9, 400])
def test_routed_scores_the_same_bits_as_the_pipeline_on_its_frame(
    make: Any, holes: bool, rows: int,
) -> None:
    x, y = frame(600, 1, holes)
    model = make().fit(x, y)
    fast = routed_fast(model, "predict_proba")
    assert isinstance(fast, Routed)
    assert fast.sparse == (make is imputed_sparse_pipeline)
    batch = frame(rows, 9, holes)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        got = fast(batch)
    assert np.array_equal(got, model.predict_proba(batch))


def test_a_regression_pipeline_matches_too() -> None:
    x, y = frame(300, 2)
    model = Pipeline([("columns", ColumnTransformer([
        ("numbers", MinMaxScaler(), NUMBERS), ("strings", OneHotEncoder(), ["channel"]),
    ])), ("model", Ridge())]).fit(x, y.astype(np.float64))
    fast = routed_fast(model, "predict")
    assert fast is not None
    assert np.array_equal(fast(x), model.predict(x))


def test_a_bundle_of_a_frame_pipeline_loads_with_the_routes(tmp_path: Path) -> None:
    x, y = frame(600, 3)
    model = dense_pipeline().fit(x, y)
    columns = x[STRINGS + NUMBERS]
    model.fit(columns, y)
    bundle = load_bundle(write_bundle(tmp_path / "b", model, name="ct", version="1",
                                      task="binary", sample=columns.iloc[:50]))
    assert isinstance(bundle.runtime.fast, Routed)
    batch = frame(33, 4)[0][STRINGS + NUMBERS]
    assert np.array_equal(bundle.runtime.predict(batch), model.predict_proba(batch))


def test_integers_among_floats_of_a_numeric_route_are_routed_as_floats() -> None:
    x, y = frame(300, 5)
    model = dense_pipeline().fit(x.assign(age=x["age"].round().astype(np.int64)), y)
    fast = routed_fast(model, "predict_proba")
    assert fast is not None
    mixed = x.assign(age=x["age"].round().astype(np.int64))  # an int among floats
    routed_only = dataclasses.replace(fast, own=None)  # no fallback to the pipeline's own
    assert np.array_equal(routed_only(mixed), model.predict_proba(mixed))


def test_columns_of_one_encoder_in_different_dtypes_take_the_pipelines_own_path() -> None:
    x, y = frame(300, 5)
    x = x.assign(size=(x["age"] // 10).astype(np.int64))
    model = Pipeline([("columns", ColumnTransformer([
        ("codes", OrdinalEncoder(), ["channel", "size"]),  # a string and an integer
    ])), ("model", LogisticRegression(max_iter=500))]).fit(x, y)
    fast = routed_fast(model, "predict_proba")
    assert fast is not None and not fast.routes[0].numeric
    assert np.array_equal(fast(x), model.predict_proba(x))
    with pytest.raises(AttributeError):  # it took the pipeline's own path
        dataclasses.replace(fast, own=None)(x)


def test_the_bundling_guides_pipeline_is_routed_from_typed_columns(tmp_path: Path) -> None:
    """docs/bundling/index.md's example: one-hot country, imputed and scaled amount (float,
    missing) and items (integer), a passed-through boolean; scored by the worker's own
    code from events, the same bits as the pipeline on the frame."""
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame({"country": rng.choice(["de", "fr", "us"], n).astype(object),
                       "amount": rng.lognormal(3, 1, n), "items": rng.integers(1, 9, n),
                       "first_time": rng.random(n) < 0.2})
    df.loc[rng.random(n) < 0.1, "amount"] = np.nan
    y = ((df["country"] == "us") | df["first_time"]).astype(int)
    model = Pipeline([("columns", ColumnTransformer([
        ("country", OneHotEncoder(handle_unknown="ignore"), ["country"]),
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["amount", "items"]),
        ("flags", "passthrough", ["first_time"]),
    ])), ("model", LogisticRegression())]).fit(df, y)
    bundle = load_bundle(write_bundle(tmp_path / "p", model, name="payments", version="1",
                                      task="binary", sample=df.iloc[:200]))
    assert bundle.runtime.input == "columns"
    fast = bundle.runtime.fast
    assert isinstance(fast, Routed)
    events = [{"id": str(i), **{k: (None if isinstance(v, float) and np.isnan(v) else v)
                                for k, v in row.items()}}
              for i, row in enumerate(df.iloc[:300].to_dict("records"))]
    events = [{k: (v.item() if hasattr(v, "item") else v) for k, v in e.items()} for e in events]
    batch = ScoringContext(bundle).extract(events, False)
    assert not batch.rejected
    routed_only = dataclasses.replace(fast, own=None)
    assert np.array_equal(routed_only(batch.matrix), model.predict_proba(df.iloc[:300]))


def test_an_unseen_category_fails_with_the_encoders_own_message() -> None:
    x, y = frame(300, 6)
    model = Pipeline([("columns", ColumnTransformer([("s", OneHotEncoder(), STRINGS)])),
                      ("model", LogisticRegression())]).fit(x, y)
    fast = routed_fast(model, "predict_proba")
    assert fast is not None
    bad = x.iloc[:3].assign(country="zz")
    with pytest.raises(ValueError) as ours:
        fast(bad)
    with pytest.raises(ValueError) as theirs:
        model.predict_proba(bad)
    assert str(ours.value) == str(theirs.value)


def test_a_passed_through_remainder_is_routed_as_it_is() -> None:
    x, y = frame(300, 8)
    model = Pipeline([("columns", ColumnTransformer([("s", OneHotEncoder(), STRINGS)],
                                                    remainder="passthrough")),
                      ("model", LogisticRegression(max_iter=2000))]).fit(x, y)
    fast = routed_fast(model, "predict_proba")
    assert fast is not None and fast.names is not None
    assert np.array_equal(fast(x), model.predict_proba(x))


def test_a_pipeline_fitted_on_an_array_is_routed_by_position_whatever_its_steps(
    tmp_path: Path,
) -> None:
    """The demo model's shape: log1p, a one-hot hour and the rest passed through, fitted
    on a bare array (any transformer: each gets the very slice the ColumnTransformer
    would give it)."""
    from worker.devtools.demo import DEMO_FEATURES, demo_estimator, sample_transactions

    matrix, labels = sample_transactions(np.random.default_rng(3), 4000)
    model = demo_estimator().fit(matrix, labels)
    bundle = load_bundle(write_bundle(tmp_path / "demo", model, name="demo", version="1",
                                      task="binary", features=DEMO_FEATURES,
                                      sample=matrix[:40]))
    fast = bundle.runtime.fast
    assert isinstance(fast, Routed) and fast.names is None
    for rows in (1, 13, 500):
        batch = sample_transactions(np.random.default_rng(rows), rows)[0]
        assert np.array_equal(bundle.runtime.predict(batch), model.predict_proba(batch))


@pytest.mark.parametrize("columns", [
    ColumnTransformer([("f", FunctionTransformer(np.abs), NUMBERS)]),
    ColumnTransformer([("n", StandardScaler(), NUMBERS)]).set_output(transform="pandas"),
])
def test_other_pipelines_keep_scikit_learns_path(columns: ColumnTransformer) -> None:
    x, y = frame(200, 7)
    model = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=2000))])
    assert routed_fast(model.fit(x, y), "predict_proba") is None
    assert routed_fast(LogisticRegression().fit(x[NUMBERS], y), "predict_proba") is None
