"""The model-runtime seam: one runtime per kind of model artifact.

A runtime kind (``RuntimeKind``) writes and reads one kind of artifact and checks
what it read against the manifest; what it reads back is a ``ModelRuntime`` that
scores a batch with one call. Everything specific to a model library (scikit-learn's
``predict_proba``, skops' trusted types, joblib) lives behind this seam; the scoring
core only sees float arrays in and out.

A bundle names its runtime in ``model.json`` (``"runtime"``, default ``"sklearn"``).
Adding a kind is adding a module with a ``RuntimeKind`` and calling ``register``.

A runtime says which input it takes (``ModelRuntime.input``), and the scoring core
builds exactly that for it (worker/core/features.py): ``float64`` (a float matrix),
``object`` (an object matrix: strings in it), ``frame`` (a pandas DataFrame with the
manifest's column names) or ``columns`` (typed columns, e.g. one ONNX input each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from worker.model.feature_types import Feature
from worker.model.manifest import ClassLabel, Manifest, ManifestError

FloatArray = npt.NDArray[np.float64]
DEFAULT_RUNTIME: Final = "sklearn"


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What the operator allows a load to do beyond the safe defaults."""

    #: Types a skops artifact may contain beyond skops' own trusted set and the types
    #: its manifest recorded, by full name (an operator's explicit extra trust).
    trusted_types: tuple[str, ...] = ()
    #: Whether pickle-based artifacts (.joblib) may be loaded: unpickling runs any code
    #: the file contains, and the sha256 beside it only detects corruption.
    allow_pickle: bool = False
    #: Threads the model's own pools may use (OpenMP, BLAS, ``n_jobs``, onnxruntime's
    #: intra-op pool): the worker's ``model_threads`` (worker/model/runtimes/threads.py).
    threads: int = 1


@dataclass(frozen=True, slots=True)
class Written:
    """What ``RuntimeKind.dump`` wrote: the served artifact, the skops types it needs
    beyond skops' defaults, and an optional second artifact kept for reference."""

    artifact: Path
    trusted_types: tuple[str, ...] = ()
    reference: Path | None = None


class ModelRuntime(Protocol):
    """A loaded model, ready to score."""

    @property
    def model(self) -> Any:
        """The library's own model object (for callers that need it, e.g. tests, retraining)."""

    @property
    def input(self) -> str:
        """What ``predict`` takes: "float64", "object", "frame" or "columns"."""

    @property
    def tolerance(self) -> float:
        """How far its outputs may be from the estimator's own (the bundle's self-test)."""

    def predict(self, matrix: Any) -> FloatArray:
        """One call for the whole batch: (n, len(classes)) probabilities for classifiers,
        (n,) or (n, 1) values for regression. Raises on rows it cannot score."""


class RuntimeKind(Protocol):
    """Writes and reads one kind of artifact."""

    @property
    def name(self) -> str:
        """The manifest's ``runtime`` value."""

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Artifact file suffixes this kind reads, e.g. (".skops", ".joblib")."""

    def load(
        self, manifest: Manifest, data: bytes, options: LoadOptions
    ) -> tuple[ModelRuntime, tuple[ClassLabel, ...]]:
        """The runtime for ``data`` (the artifact's bytes, sha256 already checked) and the
        model's classes (empty for regression); ManifestError naming the problem."""

    def dump(self, model: Any, out_dir: Path, fmt: str, features: Sequence[Feature],
             sample: Any) -> Written:
        """Write ``model`` as an artifact into ``out_dir`` (its inputs: ``features``;
        ``sample``: rows the estimator scores, for kinds that check a conversion)."""

    def classes_of(self, model: Any) -> list[Any] | None:
        """The model's class labels as plain Python values (None: it has none)."""

    def wrap(self, manifest: Manifest, model: Any) -> ModelRuntime:
        """A runtime around an already-loaded model object (no checks)."""


_KINDS: dict[str, RuntimeKind] = {}


def class_path(obj: Any) -> str:
    """``obj``'s exact class by module and name, as the fast paths match estimators (a
    subclass may change what they rely on, so it is not matched)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def register(kind: RuntimeKind) -> None:
    """Make ``kind`` available to bundles whose manifest names it."""
    _KINDS[kind.name] = kind


def get(name: str) -> RuntimeKind:
    _load_builtin()
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS))
        raise ManifestError(f"unknown runtime {name!r}, expected one of {known}") from None


def kinds() -> Sequence[str]:
    _load_builtin()
    return sorted(_KINDS)


def _load_builtin() -> None:
    # Imported on first use: the built-in kinds register themselves, and importing
    # scikit-learn only when a bundle is loaded keeps ``import worker`` light.
    if DEFAULT_RUNTIME not in _KINDS:
        # scikit-learn imports pandas; imported without it: pandas is for frame models (lazy.py).
        from worker.model.runtimes.lazy import import_sklearn

        import_sklearn()
        # onnx.py imports onnxruntime and skl2onnx only when a bundle uses it.
        from worker.model.runtimes import onnx, sklearn  # noqa: F401
