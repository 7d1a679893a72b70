"""Shared pieces of the unit tests: small real models and a misbehaving one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LinearRegression, LogisticRegression

from worker.model.bundle import ModelBundle, load_bundle
from worker.model.manifest import Task
from worker.model.writer import write_bundle

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FEATURES = ("a", "b", "c")
POISON = 666.0
NAN_TRIGGER = -777.0


def without_package(package: str) -> str:
    """A ``python -c`` script that runs the CLI (its arguments: ``sys.argv[1:]``) as if
    ``package`` (an optional extra) were not installed."""
    return f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {package!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Block())
from worker.cli import main
sys.exit(main(sys.argv[1:]))
"""


def tool_missing(message: str) -> NoReturn:
    """A tool that `make tools` installs (helm, promtool) is not there: the test is skipped on
    a developer's machine (`make test-unit` needs no tools), and fails in CI (`CI` set),
    where `make test` has installed every tool."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class PoisonEstimator(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A logistic scorer that raises when feature 0 is POISON and returns NaN
    when it is NAN_TRIGGER; counts its predict_proba calls."""

    calls: ClassVar[int] = 0

    def fit(self, x: npt.NDArray[np.float64], y: npt.NDArray[Any]) -> PoisonEstimator:
        self.classes_ = np.unique(y)
        self.n_features_in_ = x.shape[1]
        return self

    def predict_proba(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        type(self).calls += 1
        if np.any(x[:, 0] == POISON):
            raise ValueError(f"poisoned row with {x[:, 0].tolist().count(POISON)} hits")
        p = 1.0 / (1.0 + np.exp(-x.sum(axis=1) * 0.1))
        p[x[:, 0] == NAN_TRIGGER] = np.nan
        return np.column_stack([1.0 - p, p])


def training_data(
    n: int = 400, width: int = 3, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width))
    y = (x @ np.linspace(1.0, -0.5, width) + rng.normal(0.0, 0.5, n) > 0).astype(np.int64)
    return x, y


def logistic(width: int = 3, seed: int = 0) -> LogisticRegression:
    x, y = training_data(width=width, seed=seed)
    return LogisticRegression().fit(x, y)


def save(
    folder: Path,
    estimator: Any,
    task: Task = "binary",
    features: tuple[str, ...] = FEATURES,
    fmt: Literal["skops", "joblib"] = "skops",
    **extra: Any,
) -> Path:
    if "sample" not in extra:
        extra["sample"] = training_data(n=64, width=int(estimator.n_features_in_), seed=5)[0]
    return write_bundle(
        folder, estimator, name="unit", version="7", task=task, features=features, fmt=fmt, **extra
    )


def binary_bundle(folder: Path, threshold: float | None = None) -> ModelBundle:
    return load_bundle(save(folder, logistic(), threshold=threshold))


def poison_bundle(folder: Path) -> ModelBundle:
    x, y = training_data()
    bundle = load_bundle(save(folder, PoisonEstimator().fit(x, y)))
    PoisonEstimator.calls = 0  # writing ran its self-test: count from here
    return bundle


def regression_bundle(folder: Path) -> ModelBundle:
    x, y = training_data()
    model = LinearRegression().fit(x, x @ np.array([1.0, 2.0, -3.0]) + y)
    return load_bundle(save(folder, model, task="regression"))


def multiclass_bundle(folder: Path) -> ModelBundle:
    x, _ = training_data(n=600)
    y = np.digitize(x[:, 0] + x[:, 1], [-0.7, 0.7])  # classes 0, 1, 2
    labels = np.array(["low", "mid", "high"])[y]
    return load_bundle(save(folder, LogisticRegression().fit(x, labels), task="multiclass"))


def event(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid event for the FEATURES models; override or add fields by keyword."""
    base: dict[str, Any] = {"id": f"e{i}", "ts": 1_700_000_000_000 + i, "a": 0.5 * i,
                            "b": -1.25, "c": 3}
    base.update(fields)
    return base


def without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}
