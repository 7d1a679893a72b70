"""The scikit-learn runtime: a fitted estimator scored on a matrix, or on a DataFrame
when it was fitted on one; which one is decided once, at load, from the estimator's
``feature_names_in_``. An estimator fitted on a frame selects columns by name (a
ColumnTransformer given ``["country"]``) and checks ``feature_names_in_`` against what
it is given, so it must get a frame with the manifest's column names, in order, typed as
the manifest says: the scoring core builds exactly that (worker/core/frames.py) when the
runtime's ``input`` is "frame". A ColumnTransformer pipeline that routed.py can score from
the typed columns themselves takes those instead ("columns"): no frame is built for it.

Artifacts are ``.skops`` (preferred: no arbitrary code runs at load) or ``.joblib``
(pickle: loaded only when the operator allows pickle, and only after the bundle's
sha256 matched). A skops artifact is loaded trusting exactly the types its manifest
recorded when it was written (plus any the operator names); any other type is refused,
by name. The estimator is checked against the manifest: the scoring method the task
needs, ``n_features_in_``, ``feature_names_in_`` and ``classes_``.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import joblib
import numpy as np
import skops.io as sio

from worker.errors import describe
from worker.model.feature_types import Feature
from worker.model.manifest import ClassLabel, Manifest, ManifestError, Task, check_classes
from worker.model.runtimes import FloatArray, LoadOptions, ModelRuntime, Written, register
from worker.model.runtimes.forest import forest_fast
from worker.model.runtimes.lazy import load_pandas
from worker.model.runtimes.lightgbm_fast import lightgbm_fast
from worker.model.runtimes.routed import Routed, routed_fast
from worker.model.runtimes.threads import ThreadLimit, limit_estimator

TOLERANCE: Final = 1e-9
PICKLE_REFUSED: Final = (
    "is a pickle (.joblib): loading it runs any code it contains, and the sha256 beside "
    "it only detects corruption, not tampering; set allow_pickle = true "
    "(--allow-pickle) to load it anyway, or write the bundle as .skops"
)


@dataclass(frozen=True, slots=True)
class SklearnRuntime:
    """``predict_proba`` for classifiers, ``predict`` for regression, on the whole batch."""

    estimator: Any
    task: Task
    #: "float64"; "object" when a feature is a string (an array fitted with strings);
    #: "frame" for an estimator fitted on a pandas DataFrame; "columns" (typed columns)
    #: for one of those that routed.py scores without a frame.
    input: str = "float64"
    tolerance: float = TOLERANCE
    #: The thread pools' limit, applied in each thread that scores (None: left as they
    #: are, for a model wrapped in a caller's process rather than loaded to serve).
    pools: ThreadLimit | None = None
    #: The same bits as the estimator's own method, without its per-call overhead: a
    #: forest scored tree by tree after one input check (worker/model/runtimes/forest.py),
    #: a LightGBM estimator through its Booster (lightgbm_fast.py), a ColumnTransformer
    #: pipeline fed arrays instead of sub-frames (routed.py). None: its own method.
    fast: Callable[[Any], FloatArray] | None = None

    @property
    def model(self) -> Any:
        return self.estimator

    @property
    def fitted_input(self) -> str:
        """What the estimator itself takes (to fit or explain it): "columns" are routed.py's
        view of an estimator fitted on a frame."""
        return "frame" if self.input == "columns" else self.input

    def predict(self, matrix: Any) -> FloatArray:
        if self.pools is not None:
            self.pools.ensure()
        if self.fast is not None:
            return self.fast(matrix)
        if self.task == "regression":
            return np.asarray(self.estimator.predict(matrix), dtype=np.float64)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)


class SklearnKind:
    name: Final = "sklearn"
    suffixes: Final = (".skops", ".joblib")

    def load(
        self, manifest: Manifest, data: bytes, options: LoadOptions
    ) -> tuple[ModelRuntime, tuple[ClassLabel, ...]]:
        estimator = deserialise(manifest, data, options)
        _check_methods(manifest.task, estimator)
        _check_feature_count(manifest, estimator)
        _check_feature_names(manifest, estimator)
        classes = _check_estimator_classes(manifest, estimator)
        runtime = self.wrap(manifest, estimator)
        pools = limit_estimator(estimator, options.threads)
        fast = _fast(runtime, options)
        if isinstance(fast, Routed) and fast.names is not None:
            runtime = dataclasses.replace(runtime, input="columns")  # no DataFrame to build
        return dataclasses.replace(runtime, pools=pools, fast=fast), classes

    def classes_of(self, model: Any) -> list[Any] | None:
        raw = getattr(model, "classes_", None)
        return None if raw is None else plain(raw)

    def wrap(self, manifest: Manifest, model: Any) -> SklearnRuntime:
        if getattr(model, "feature_names_in_", None) is not None:
            load_pandas()  # now, not on the first batch
            return SklearnRuntime(model, manifest.task, "frame")
        strings = any(f.type == "string" for f in manifest.feature_specs)
        return SklearnRuntime(model, manifest.task, "object" if strings else "float64")

    def dump(self, model: Any, out_dir: Path, fmt: str, features: Sequence[Feature],
             sample: Any) -> Written:
        return dump_sklearn(model, out_dir, fmt)


def _fast(runtime: SklearnRuntime, options: LoadOptions) -> Callable[[Any], FloatArray] | None:
    """The path that gives the estimator's own bits for less, where there is one."""
    method = "predict" if runtime.task == "regression" else "predict_proba"
    if runtime.input == "float64":
        return (forest_fast(runtime.estimator, options.threads)
                or lightgbm_fast(runtime.estimator) or routed_fast(runtime.estimator, method))
    return routed_fast(runtime.estimator, method)  # "object" or "frame"


def dump_sklearn(model: Any, out_dir: Path, fmt: str) -> Written:
    """``model.skops`` (with the types it needs beyond skops' defaults) or ``model.joblib``."""
    if fmt not in ("skops", "joblib"):
        raise ValueError(f"fmt must be 'skops' or 'joblib', got {fmt!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / f"model.{fmt}"
    if fmt == "joblib":
        joblib.dump(model, artifact)
        return Written(artifact)
    data = sio.dumps(model)
    artifact.write_bytes(data)
    return Written(artifact, tuple(sorted(sio.get_untrusted_types(data=data))))


def deserialise(manifest: Manifest, data: bytes, options: LoadOptions) -> Any:
    """The estimator in ``data`` (whose sha256 the caller has checked)."""
    artifact = manifest.artifact
    if artifact.endswith(".skops"):
        return _load_skops(data, (*manifest.trusted_types, *options.trusted_types))
    if not options.allow_pickle:
        raise ManifestError(f"{artifact} {PICKLE_REFUSED}")
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
        raise ManifestError(f"skops artifact needs types its manifest does not trust: "
                            f"{', '.join(refused)}")
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
                            f"{len(manifest.features)}")
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
