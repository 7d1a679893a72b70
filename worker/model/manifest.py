"""The ``model.json`` manifest of a model bundle, parsed strictly.

Parsing never trusts the file: every field is type-checked here so that the
loader and the hot path can rely on plain, well-typed values. Problems raise
``ManifestError`` with a short reason; ``model.load_bundle`` adds the path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Final, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from worker.model.calibration import Calibration, CalibrationError
from worker.model.feature_types import Feature, FeatureSpecError, parse_features
from worker.model.profile import Profile, ProfileError, parse_optional
from worker.model.sample import SampleError, SelfTest, parse_libraries

Task: TypeAlias = Literal["binary", "multiclass", "regression"]
ClassLabel: TypeAlias = int | float | str

TASKS: Final[tuple[Task, ...]] = ("binary", "multiclass", "regression")
DEFAULT_THRESHOLD: Final = 0.5
_SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """The manifest content is invalid; the message is one short line."""


@dataclass(frozen=True, slots=True)
class ReferenceHistogram:
    """Histogram of holdout scores (binary) or predictions (regression), for PSI."""

    edges: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def from_scores(
        cls, scores: npt.ArrayLike, bins: int = 20, value_range: tuple[float, float] = (0.0, 1.0)
    ) -> ReferenceHistogram:
        counts, edges = np.histogram(np.asarray(scores, dtype=np.float64), bins, value_range)
        # Rounded so that model.json shows 0.15, not 0.15000000000000002.
        return cls(edges=tuple(np.round(edges, 12).tolist()), counts=tuple(counts.tolist()))

    @classmethod
    def parse(cls, data: object) -> ReferenceHistogram:
        if not isinstance(data, dict):
            raise ManifestError("'reference_histogram' must be an object with edges and counts")
        edges = _numbers(data.get("edges"), "reference_histogram.edges")
        counts = _numbers(data.get("counts"), "reference_histogram.counts")
        if len(edges) < 2 or len(counts) != len(edges) - 1:
            raise ManifestError("reference_histogram needs len(edges) == len(counts) + 1 >= 2")
        if any(b <= a for a, b in pairwise(edges)):
            raise ManifestError("reference_histogram.edges must be strictly increasing")
        if any(c < 0 for c in counts):
            raise ManifestError("reference_histogram.counts must not be negative")
        return cls(edges=tuple(edges), counts=tuple(counts))

    def to_dict(self) -> dict[str, list[float]]:
        return {"edges": list(self.edges), "counts": list(self.counts)}


@dataclass(frozen=True, slots=True)
class Manifest:
    """What ``model.json`` says about the artifact next to it."""

    name: str
    version: str
    task: Task
    features: tuple[str, ...]
    artifact: str
    sha256: str
    threshold: float = DEFAULT_THRESHOLD
    classes: tuple[ClassLabel, ...] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    reference_histogram: ReferenceHistogram | None = None
    created_at: str | None = None
    #: The runtime kind that reads the artifact (worker/model/runtimes/).
    runtime: str = "sklearn"
    #: Each feature's type and whether it may be missing; empty: every feature a number.
    feature_specs: tuple[Feature, ...] = ()
    #: Types the skops artifact needs beyond skops' defaults, recorded when it was written:
    #: exactly these are trusted at load, and only after the sha256 matched.
    trusted_types: tuple[str, ...] = ()
    #: Events with the scores the estimator gave them, checked at every load.
    self_test: SelfTest | None = None
    #: Library versions the bundle was written with (python, numpy, scikit-learn, ...).
    libraries: Mapping[str, str] = field(default_factory=dict)
    #: A second artifact kept beside the served one (ONNX: the scikit-learn original).
    reference: Reference | None = None
    #: Where the model came from (written by ``scoring-worker retrain``: data range, row
    #: counts, the champion it was compared with, both sets of figures); free-form JSON.
    lineage: Mapping[str, Any] | None = None
    #: Binary models: the score -> outcome-rate map fitted on a labeled holdout, for the
    #: monitor's estimated figures (worker/model/calibration.py).
    calibration: Calibration | None = None
    #: Each input's reference profile (worker/model/profile.py), for drift and data
    #: quality; None: the bundle serves, feature drift is off for it.
    profile: Profile | None = None

    def __post_init__(self) -> None:
        if not self.feature_specs:
            object.__setattr__(self, "feature_specs", tuple(Feature(n) for n in self.features))
        if tuple(f.name for f in self.feature_specs) != tuple(self.features):
            raise ManifestError("feature_specs must name the features in order")
        if self.profile is not None:
            try:
                self.profile.check(self.feature_specs)
            except ProfileError as exc:
                raise ManifestError(str(exc)) from None

    @classmethod
    def parse(cls, data: object) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError("model.json must contain a JSON object")
        try:
            return cls._parse(data)
        except (FeatureSpecError, SampleError, CalibrationError, ProfileError) as exc:
            raise ManifestError(str(exc)) from None

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> Manifest:
        histogram = data.get("reference_histogram")
        specs = parse_features(data.get("features"))
        reference = data.get("reference")
        return cls(
            name=_text(data, "name"),
            version=_text(data, "version"),
            task=_task(data.get("task")),
            features=tuple(f.name for f in specs),
            artifact=_artifact(data.get("artifact")),
            sha256=_sha256(data.get("sha256")),
            threshold=_threshold(data.get("threshold")),
            classes=_classes(data.get("classes")),
            metrics=_metrics(data.get("metrics")),
            reference_histogram=None if histogram is None else ReferenceHistogram.parse(histogram),
            created_at=_optional_text(data, "created_at"),
            runtime=_optional_text(data, "runtime") or "sklearn",
            feature_specs=specs,
            trusted_types=_names(data.get("trusted_types"), "trusted_types"),
            self_test=None if data.get("self_test") is None else SelfTest.parse(data["self_test"]),
            libraries=parse_libraries(data.get("libraries")),
            reference=None if reference is None else Reference.parse(reference),
            lineage=_lineage(data.get("lineage")),
            calibration=None if data.get("calibration") is None
            else Calibration.parse(data["calibration"]),
            profile=parse_optional(data.get("profile")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "features": [f.to_dict() for f in self.feature_specs],
            "artifact": self.artifact,
            "sha256": self.sha256,
            "threshold": self.threshold,
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        out["metrics"] = dict(self.metrics)
        if self.reference_histogram is not None:
            out["reference_histogram"] = self.reference_histogram.to_dict()
        if self.created_at is not None:
            out["created_at"] = self.created_at
        if self.runtime != "sklearn":  # absent means sklearn: older manifests stay as they were
            out["runtime"] = self.runtime
        out["trusted_types"] = list(self.trusted_types)
        if self.reference is not None:
            out["reference"] = self.reference.to_dict()
        if self.libraries:
            out["libraries"] = dict(self.libraries)
        if self.self_test is not None:
            out["self_test"] = self.self_test.to_dict()
        if self.lineage is not None:
            out["lineage"] = dict(self.lineage)
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.profile is not None:
            out["profile"] = self.profile.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class Reference:
    """A second artifact in the bundle's folder, with its own SHA-256."""

    artifact: str
    sha256: str

    @classmethod
    def parse(cls, data: object) -> Reference:
        if not isinstance(data, dict):
            raise ManifestError("'reference' must be an object with artifact and sha256")
        return cls(_artifact(data.get("artifact")), _sha256(data.get("sha256")))

    def to_dict(self) -> dict[str, str]:
        return {"artifact": self.artifact, "sha256": self.sha256}


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{key!r} must be a non-empty string")
    return value


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{key!r} must be a string")
    return value


def _lineage(value: object) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ManifestError("'lineage' must be an object")
    return value


def _task(value: object) -> Task:
    if value not in TASKS:
        raise ManifestError(f"unknown task {value!r}, expected one of {', '.join(TASKS)}")
    return value



def _names(value: object, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ManifestError(f"{key!r} must be a list of names")
    return tuple(value)


def _artifact(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError("'artifact' must be a file name")
    # A bare file name only: a manifest must not point outside its own folder.
    if PurePosixPath(value).name != value or PureWindowsPath(value).name != value:
        raise ManifestError(f"'artifact' must be a bare file name, got {value!r}")
    if value in {".", ".."}:
        raise ManifestError(f"'artifact' must be a file name, got {value!r}")
    return value  # the suffix is the runtime's to check (it knows which files it reads)


def _sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256_RE.match(value.lower()):
        raise ManifestError("'sha256' must be 64 hexadecimal digits")
    return value.lower()


def _threshold(value: object) -> float:
    if value is None:
        return DEFAULT_THRESHOLD
    if not _is_number(value) or not 0.0 <= float(cast(float, value)) <= 1.0:
        raise ManifestError(f"'threshold' must be a number in [0, 1], got {value!r}")
    return float(cast(float, value))


def _classes(value: object) -> tuple[ClassLabel, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) < 2:
        raise ManifestError("'classes' must be a list of at least two labels")
    if not all(isinstance(c, str) or _is_number(c) for c in value):
        raise ManifestError("'classes' entries must be integers, numbers or strings")
    return tuple(value)


def _metrics(value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
        raise ManifestError("'metrics' must be an object of name -> number")
    return {str(k): float(v) for k, v in value.items()}


def _numbers(value: object, what: str) -> list[float]:
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise ManifestError(f"{what} must be a list of finite numbers")
    return [float(v) for v in value]


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(cast(float, value))


def check_classes(values: Sequence[object]) -> tuple[ClassLabel, ...]:
    """Plain-Python class labels, refusing types a prediction cannot carry."""
    if not all(isinstance(v, str) or _is_number(v) for v in values):
        kinds = sorted({type(v).__name__ for v in values})
        raise ManifestError(f"classes must be integers, numbers or strings, got {kinds}")
    return tuple(cast(Sequence[ClassLabel], values))
