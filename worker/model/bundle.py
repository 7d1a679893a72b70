"""Model bundles: a folder with ``model.json`` and one model artifact.

Loading is paranoid because an artifact is code-adjacent: the artifact bytes
are read once, hashed, compared with the manifest, and only those very bytes
are handed to the bundle's runtime (no window for the file to change in
between). What the runtime does with them, and which library it calls, is the
runtime's business (worker/model/runtimes/); this module knows files and the
manifest only.

``load_bundle`` has no side effects, so a later hot reload can simply call it
again and swap the returned bundle in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from worker.errors import ModelLoadError
from worker.model import runtimes
from worker.model.manifest import (
    ClassLabel,
    Manifest,
    ManifestError,
    Task,
)
from worker.model.runtimes import LoadOptions, ModelRuntime

MANIFEST_NAME: Final = "model.json"


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """A loaded, checked model plus what the hot path needs precomputed.

    ``estimator`` is the model library's own object; ``runtime`` scores with it (built
    from the manifest's runtime kind when not given).
    """

    manifest: Manifest
    estimator: Any
    path: Path
    classes: tuple[ClassLabel, ...]
    positive_index: int | None
    class_keys: tuple[str, ...]
    runtime: ModelRuntime = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.runtime is None:
            wrapped = runtimes.get(self.manifest.runtime).wrap(self.manifest, self.estimator)
            object.__setattr__(self, "runtime", wrapped)

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


def load_bundle(
    path: Path, *, trusted_types: Sequence[str] = (), allow_pickle: bool = False,
    threads: int = 1,
) -> ModelBundle:
    """Load and check the bundle at ``path`` (its folder or its model.json).

    A ``.skops`` artifact may contain the types its manifest recorded when it was
    written (``trusted_types`` adds more, by full name); a ``.joblib`` one loads only
    with ``allow_pickle``. The model's thread pools are limited to ``threads``
    (worker/model/runtimes/threads.py). This does not run the bundle's self-test: that takes the
    scoring core (worker/model/checked.py, ``load_checked``).
    """
    folder, manifest_path = _locate(Path(path))
    try:
        manifest = _read_manifest(manifest_path)
        kind = runtimes.get(manifest.runtime)
        if not manifest.artifact.endswith(kind.suffixes):
            raise ManifestError(f"'artifact' must end in {' or '.join(kind.suffixes)}, "
                                f"got {manifest.artifact!r}")
        data = _checked_bytes(folder, manifest.artifact, manifest.sha256)
        if manifest.reference is not None:
            _checked_bytes(folder, manifest.reference.artifact, manifest.reference.sha256)
        options = LoadOptions(tuple(trusted_types), allow_pickle, threads)
        runtime, classes = kind.load(manifest, data, options)
    except ManifestError as exc:
        problem = " ".join(str(exc).split())
        raise ModelLoadError(f"model bundle {manifest_path}: {problem}") from None
    return ModelBundle(
        manifest=manifest,
        estimator=runtime.model,
        path=folder,
        classes=classes,
        positive_index=1 if manifest.task == "binary" else None,
        class_keys=tuple(str(c) for c in classes),
        runtime=runtime,
    )


_JSON_OPTS: Final = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


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


def _checked_bytes(folder: Path, name: str, sha256: str) -> bytes:
    """The artifact's bytes, read once: what is hashed is what gets loaded."""
    data = _read_artifact(folder / name)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ManifestError(
            f"sha256 mismatch for {name}: manifest {sha256[:12]}..., file {actual[:12]}..."
        )
    return data


def _read_artifact(artifact: Path) -> bytes:
    try:
        return artifact.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"artifact {artifact.name} not found") from None
    except OSError as exc:
        raise ManifestError(f"cannot read artifact {artifact.name}: {exc.strerror}") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """model.json, written whole or not at all."""
    _atomic_write(folder / MANIFEST_NAME, orjson.dumps(manifest.to_dict(), option=_JSON_OPTS))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
