"""Model bundles: a folder with ``model.json`` and one estimator artifact.

Loading is paranoid because an artifact is code-adjacent: the artifact bytes
are read once, hashed, compared with the manifest, and only those very bytes
are deserialised (no window for the file to change in between). ``.joblib``
(pickle) is therefore never unpickled unless its sha256 matches, and
``.skops`` is refused when it needs types skops does not trust by default,
unless the caller explicitly allows them by name.

``load_bundle`` has no side effects, so a later hot reload can simply call it
again and swap the returned bundle in.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import joblib
import orjson
import skops.io as sio

from worker.errors import ModelLoadError
from worker.model.manifest import (
    ClassLabel,
    Manifest,
    ManifestError,
    ReferenceHistogram,
    Task,
    check_classes,
)

MANIFEST_NAME: Final = "model.json"
_MAX_DETAIL: Final = 300


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """A loaded, checked model plus what the hot path needs precomputed."""

    manifest: Manifest
    estimator: Any
    path: Path
    classes: tuple[ClassLabel, ...]
    positive_index: int | None
    class_keys: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def features(self) -> tuple[str, ...]:
        return self.manifest.features

    @property
    def threshold(self) -> float:
        return self.manifest.threshold


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path: Path, *, trusted_types: Sequence[str] = ()) -> ModelBundle:
    """Load and check the bundle at ``path`` (its folder or its model.json).

    ``trusted_types`` names extra types a ``.skops`` artifact may contain
    beyond skops' own trusted set (e.g. the HistGradientBoosting tree type);
    empty by default.
    """
    folder, manifest_path = _locate(Path(path))
    try:
        manifest = _read_manifest(manifest_path)
        artifact = folder / manifest.artifact
        data = _read_artifact(artifact)
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest.sha256:
            raise ManifestError(
                f"sha256 mismatch for {manifest.artifact}: "
                f"manifest {manifest.sha256[:12]}..., file {actual[:12]}..."
            )
        estimator = _deserialise(manifest.artifact, data, trusted_types)
        return _checked_bundle(manifest, estimator, folder)
    except ManifestError as exc:
        problem = " ".join(str(exc).split())
        raise ModelLoadError(f"model bundle {manifest_path}: {problem}") from None


def write_bundle(
    out_dir: Path,
    estimator: Any,
    *,
    name: str,
    version: str,
    task: Task,
    features: Sequence[str],
    fmt: Literal["skops", "joblib"] = "skops",
    threshold: float | None = None,
    metrics: Mapping[str, float] | None = None,
    reference_histogram: ReferenceHistogram | Mapping[str, Any] | None = None,
    created_at: str | None = None,
) -> Path:
    """Dump ``estimator`` and its manifest into ``out_dir``; return the folder."""
    if fmt not in ("skops", "joblib"):
        raise ValueError(f"fmt must be 'skops' or 'joblib', got {fmt!r}")
    if isinstance(reference_histogram, Mapping):
        reference_histogram = ReferenceHistogram.parse(dict(reference_histogram))
    artifact = _dump(estimator, out_dir, fmt)
    classes = getattr(estimator, "classes_", None) if task != "regression" else None
    manifest = Manifest(
        name=name,
        version=version,
        task=task,
        features=tuple(features),
        artifact=artifact.name,
        sha256=sha256_file(artifact),
        threshold=0.5 if threshold is None else float(threshold),
        classes=None if classes is None else check_classes(_plain(classes)),
        metrics={k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))},
        reference_histogram=reference_histogram,
        created_at=created_at,
    )
    # Round-trip through the parser so that a bundle we write is one we accept.
    Manifest.parse(manifest.to_dict())
    _atomic_write(out_dir / MANIFEST_NAME, orjson.dumps(manifest.to_dict(), option=_JSON_OPTS))
    return out_dir


_JSON_OPTS: Final = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def _dump(estimator: Any, out_dir: Path, fmt: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / f"model.{fmt}"
    if fmt == "skops":
        sio.dump(estimator, artifact)
    else:
        joblib.dump(estimator, artifact)
    return artifact


def _locate(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path, path / MANIFEST_NAME
    return path.parent, path


def _read_manifest(manifest_path: Path) -> Manifest:
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ManifestError("model.json not found") from None
    except OSError as exc:
        raise ManifestError(f"cannot read model.json: {exc.strerror}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"model.json is not valid JSON: {exc}") from None
    return Manifest.parse(data)


def _read_artifact(artifact: Path) -> bytes:
    try:
        return artifact.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"artifact {artifact.name} not found") from None
    except OSError as exc:
        raise ManifestError(f"cannot read artifact {artifact.name}: {exc.strerror}") from None


def _deserialise(artifact: str, data: bytes, trusted_types: Sequence[str]) -> Any:
    if artifact.endswith(".skops"):
        return _load_skops(data, trusted_types)
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # unpickling can raise anything
        raise ManifestError(f"cannot load {artifact}: {_detail(exc)}") from None


def _load_skops(data: bytes, trusted_types: Sequence[str]) -> Any:
    try:
        needed = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ManifestError(f"not a readable skops file: {_detail(exc)}") from None
    refused = sorted(set(needed) - set(trusted_types))
    if refused:
        raise ManifestError(f"skops artifact needs untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=list(needed))
    except Exception as exc:
        raise ManifestError(f"cannot load skops artifact: {_detail(exc)}") from None


def _checked_bundle(manifest: Manifest, estimator: Any, folder: Path) -> ModelBundle:
    _check_methods(manifest.task, estimator)
    _check_feature_count(manifest, estimator)
    _check_feature_names(manifest, estimator)
    classes = _check_estimator_classes(manifest, estimator)
    return ModelBundle(
        manifest=manifest,
        estimator=estimator,
        path=folder,
        classes=classes,
        positive_index=1 if manifest.task == "binary" else None,
        class_keys=tuple(str(c) for c in classes),
    )


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
    classes = check_classes(_plain(raw))
    if manifest.task == "binary" and len(classes) != 2:
        raise ManifestError(f"task 'binary' needs 2 classes, estimator has {len(classes)}")
    if manifest.task == "multiclass" and len(classes) < 2:
        raise ManifestError(f"task 'multiclass' needs classes, estimator has {len(classes)}")
    if manifest.classes is not None and list(manifest.classes) != list(classes):
        raise ManifestError(
            f"manifest classes {list(manifest.classes)} differ from the estimator's {list(classes)}"
        )
    return classes


def _plain(values: Any) -> list[Any]:
    """numpy scalars -> Python values, so labels serialise as plain JSON."""
    return list(values.tolist() if hasattr(values, "tolist") else values)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _detail(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
