"""The scikit-learn runtime: a fitted estimator scored on a float64 matrix.

Artifacts are ``.skops`` (preferred: no arbitrary code runs at load) or ``.joblib``
(pickle: unpickled only after the bundle's sha256 matched). A skops artifact that
needs types skops does not trust by default is refused unless the caller names them.
The estimator is checked against the manifest: the scoring method the task needs,
``n_features_in_``, ``feature_names_in_`` and ``classes_``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
import skops.io as sio

from worker.errors import describe
from worker.model.manifest import ClassLabel, Manifest, ManifestError, Task, check_classes
from worker.model.runtimes import FloatArray, LoadOptions, ModelRuntime, register


@dataclass(frozen=True, slots=True)
class SklearnRuntime:
    """``predict_proba`` for classifiers, ``predict`` for regression, on the whole batch."""

    estimator: Any
    task: Task
    width: int

    @property
    def model(self) -> Any:
        return self.estimator

    def predict(self, matrix: FloatArray) -> FloatArray:
        if self.task == "regression":
            return np.asarray(self.estimator.predict(matrix), dtype=np.float64)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)

    def smoke_batch(self) -> FloatArray:
        return np.vstack([np.zeros((4, self.width)), np.ones((4, self.width))])


class SklearnKind:
    name: Final = "sklearn"
    suffixes: Final = (".skops", ".joblib")

    def load(
        self, manifest: Manifest, data: bytes, options: LoadOptions
    ) -> tuple[ModelRuntime, tuple[ClassLabel, ...]]:
        estimator = _deserialise(manifest.artifact, data, options.trusted_types)
        _check_methods(manifest.task, estimator)
        _check_feature_count(manifest, estimator)
        _check_feature_names(manifest, estimator)
        classes = _check_estimator_classes(manifest, estimator)
        return self.wrap(manifest, estimator), classes

    def classes_of(self, model: Any) -> list[Any] | None:
        raw = getattr(model, "classes_", None)
        return None if raw is None else plain(raw)

    def wrap(self, manifest: Manifest, model: Any) -> SklearnRuntime:
        return SklearnRuntime(model, manifest.task, len(manifest.features))

    def dump(self, model: Any, out_dir: Path, fmt: str) -> Path:
        if fmt not in ("skops", "joblib"):
            raise ValueError(f"fmt must be 'skops' or 'joblib', got {fmt!r}")
        out_dir.mkdir(parents=True, exist_ok=True)
        artifact = out_dir / f"model.{fmt}"
        if fmt == "skops":
            sio.dump(model, artifact)
        else:
            joblib.dump(model, artifact)
        return artifact


def _deserialise(artifact: str, data: bytes, trusted_types: tuple[str, ...]) -> Any:
    if artifact.endswith(".skops"):
        return _load_skops(data, trusted_types)
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise anything
        raise ManifestError(f"cannot load {artifact}: {describe(exc)}") from None


def _load_skops(data: bytes, trusted_types: tuple[str, ...]) -> Any:
    try:
        needed = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ManifestError(f"not a readable skops file: {describe(exc)}") from None
    refused = sorted(set(needed) - set(trusted_types))
    if refused:
        raise ManifestError(f"skops artifact needs untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=list(needed))
    except Exception as exc:
        raise ManifestError(f"cannot load skops artifact: {describe(exc)}") from None


def _check_methods(task: Task, estimator: Any) -> None:
    method = "predict" if task == "regression" else "predict_proba"
    if not callable(getattr(estimator, method, None)):
        kind = type(estimator).__name__
        raise ManifestError(f"task {task!r} needs {method}(), which {kind} does not have")


def _check_feature_count(manifest: Manifest, estimator: Any) -> None:
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise ManifestError("estimator has no n_features_in_ (is it fitted?)")
    if int(n_in) != len(manifest.features):
        raise ManifestError(
            f"estimator expects {int(n_in)} features, manifest lists {len(manifest.features)}"
        )


def _check_feature_names(manifest: Manifest, estimator: Any) -> None:
    names_in = getattr(estimator, "feature_names_in_", None)
    if names_in is None:
        return
    names = [str(name) for name in names_in]
    if len(names) != len(manifest.features):
        raise ManifestError(f"estimator has {len(names)} feature names, manifest lists "
                            f"{len(manifest.features)}")  # fmt: skip
    for position, (got, want) in enumerate(zip(names, manifest.features, strict=True)):
        if got != want:
            raise ManifestError(
                f"feature {position} is {got!r} in the estimator "
                f"but {want!r} in the manifest"
            )


def _check_estimator_classes(manifest: Manifest, estimator: Any) -> tuple[ClassLabel, ...]:
    if manifest.task == "regression":
        return ()
    raw = getattr(estimator, "classes_", None)
    if raw is None:
        raise ManifestError("classifier has no classes_")
    classes = check_classes(plain(raw))
    if manifest.task == "binary" and len(classes) != 2:
        raise ManifestError(f"task 'binary' needs 2 classes, estimator has {len(classes)}")
    if manifest.task == "multiclass" and len(classes) < 2:
        raise ManifestError(f"task 'multiclass' needs classes, estimator has {len(classes)}")
    if manifest.classes is not None and list(manifest.classes) != list(classes):
        raise ManifestError(
            f"manifest classes {list(manifest.classes)} differ from the estimator's {list(classes)}"
        )
    return classes


def plain(values: Any) -> list[Any]:
    """numpy scalars -> Python values, so labels serialise as plain JSON."""
    return list(values.tolist() if hasattr(values, "tolist") else values)



register(SklearnKind())
