"""The kinds of model teams train, for the parity tests: each a fitted estimator, the
rows it is scored on (a DataFrame or an array) and those rows as events.

Built from scikit-learn's shipped datasets (iris, diabetes, breast cancer: no download)
and from synthetic categorical data with strings, booleans, integers and missing values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from worker.model.feature_types import is_missing


@dataclass
class Kind:
    name: str
    task: str
    estimator: Any
    rows: Any  # what the estimator scores: holdout rows, DataFrame or array
    features: list[str] | None  # names for array fits; None: the frame's columns

    def expected(self) -> np.ndarray:
        est = self.estimator
        method = est.predict if self.task == "regression" else est.predict_proba
        return np.asarray(method(self.rows), dtype=np.float64)

    def events(self) -> list[dict[str, Any]]:
        return to_events(self.name, self.rows, self.features)


def to_events(prefix: str, rows: Any, names: list[str] | None) -> list[dict[str, Any]]:
    """One event per row; a missing value is alternately absent and null."""
    if hasattr(rows, "columns"):
        names, records = list(rows.columns), rows.to_dict("records")
    else:
        assert names is not None
        records = [dict(zip(names, row, strict=True)) for row in np.asarray(rows).tolist()]
    events = []
    for i, record in enumerate(records):
        event: dict[str, Any] = {"id": f"{prefix}-{i}"}
        for k, (name, value) in enumerate(record.items()):
            if is_missing(value):
                if (i + k) % 2:
                    event[name] = None
                continue
            event[name] = value.item() if hasattr(value, "item") else value
        events.append(event)
    return events


def payments(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic card payments: strings, a boolean, an integer, numbers, missing values."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "country": rng.choice(["de", "fr", "us", "gb"], n),
        "channel": rng.choice(["web", "app", "pos"], n),
        "amount": np.round(rng.lognormal(3, 1, n), 2),
        "items": rng.integers(1, 9, n),
        "first_time": rng.random(n) < 0.2,
        "risk": rng.normal(size=n),
    })
    df.loc[rng.random(n) < 0.1, "risk"] = np.nan
    df.loc[rng.random(n) < 0.1, "channel"] = np.nan
    logit = (np.log(df["amount"]) - 3 + df["first_time"] * 1.5 + (df["country"] == "us")
             + df["risk"].fillna(0) - 0.1 * df["items"])
    return df, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def payments_pipeline(handle_unknown: str = "ignore") -> Pipeline:
    strings = make_pipeline(SimpleImputer(strategy="most_frequent"),
                            OneHotEncoder(handle_unknown=handle_unknown))
    columns = ColumnTransformer([
        ("country", OneHotEncoder(handle_unknown=handle_unknown), ["country"]),
        ("channel", strings, ["channel"]),
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["amount", "items", "risk"]),
        ("flags", "passthrough", ["first_time"]),
    ])
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))])


def _payments_lr() -> Kind:
    df, y = payments(3000, 1)
    model = payments_pipeline().fit(df.iloc[:2600], y[:2600])
    return Kind("payments-lr", "binary", model, df.iloc[2600:], None)


def _payments_onnx() -> Kind:
    """The payments pipeline as ONNX takes it: no string imputer (ONNX's Imputer is for
    numbers only), so a missing channel is its own category."""
    df, y = payments(3000, 3)
    df["channel"] = df["channel"].fillna("none")
    columns = ColumnTransformer([
        ("strings", OneHotEncoder(handle_unknown="ignore"), ["country", "channel"]),
        ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), ["amount", "items", "risk"]),
        ("flags", "passthrough", ["first_time"]),
    ])
    model = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))])
    model.fit(df.iloc[:2600], y[:2600])
    return Kind("payments-onnx", "binary", model, df.iloc[2600:], None)


def _payments_hgb() -> Kind:
    df, y = payments(3000, 2)
    numbers = df[["amount", "items", "risk"]]
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0)
    model.fit(numbers.iloc[:2600], y[:2600])
    return Kind("payments-hgb", "binary", model, numbers.iloc[2600:], None)


def _iris_rf() -> Kind:
    x, y = load_iris(return_X_y=True)
    order = np.random.default_rng(3).permutation(len(y))
    x, y = x[order], y[order]
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(x[:110], y[:110])
    names = ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    return Kind("iris-rf", "multiclass", model, x[110:], names)


def _cancer_hgb_nan() -> Kind:
    x, y = load_breast_cancer(return_X_y=True)
    x = x[:, :8].copy()
    x[np.random.default_rng(4).random(x.shape) < 0.05] = np.nan
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x[:450], y[:450])
    return Kind("cancer-hgb", "binary", model, x[450:], [f"m{i}" for i in range(8)])


def _diabetes_frame() -> Kind:
    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target
    model = make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=50))
    model.fit(x.iloc[:380], y.iloc[:380])
    return Kind("diabetes-hgb", "regression", model, x.iloc[380:], None)


def _iris_lr_frame() -> Kind:
    data = load_iris(as_frame=True)
    x, y = data.data, data.target.map(dict(enumerate(data.target_names)))
    order = np.random.default_rng(5).permutation(len(y))
    x, y = x.iloc[order], y.iloc[order]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x[:110], y[:110])
    return Kind("iris-lr", "multiclass", model, x.iloc[110:], None)


KINDS: dict[str, Callable[[], Kind]] = {
    "payments-lr": _payments_lr, "payments-onnx": _payments_onnx, "payments-hgb": _payments_hgb,
    "iris-rf": _iris_rf, "cancer-hgb": _cancer_hgb_nan, "diabetes-hgb": _diabetes_frame,
    "iris-lr": _iris_lr_frame,
}
