"""A folder of model bundles with a ``current`` pointer per model name.

Layout: ``STORE/<name>/<version>/`` holds one bundle (model.json + artifact),
``STORE/<name>/current`` the version being served and ``STORE/<name>/history``
the previous ones (newest last), for rollback. Pointer files change by
write-to-temp, fsync, ``os.replace``: a worker polling ``current`` reads either
the old or the new version, never half a file. Every version is checked with
``load_checked`` (its self-test included) before it can become current, so a broken
bundle never gets the pointer; workers still check again, since files can change
after the fact.

``current`` holds the version and a sequence number (``2`` then ``sequence 17``):
every promote and rollback takes the next number (the store's own counter, under a
lock), and the same number goes into the control record a promote publishes, so
workers order instructions by it, never by clocks. A pointer written before
sequences existed (the version alone) reads as sequence 0.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from worker.errors import ModelStoreError
from worker.model.bundle import MANIFEST_NAME, ModelBundle
from worker.model.checked import load_checked

CURRENT: Final = "current"
HISTORY: Final = "history"
HISTORY_KEEP: Final = 10
_SEQUENCE: Final = "sequence "


@dataclass(frozen=True, slots=True)
class Pointer:
    """What ``current`` says: the version to serve, and the sequence of that instruction."""

    version: str
    sequence: int = 0

    def encode(self) -> bytes:
        return f"{self.version}\n{_SEQUENCE}{self.sequence}\n".encode()


@dataclass(frozen=True, slots=True)
class StoredVersion:
    name: str
    version: str
    current: bool


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is ``STORE/<name>``: a store folder of one model (has ``current``)."""
    return (path / CURRENT).is_file()


def read_pointer(model_folder: Path) -> str:
    """The version ``current`` names; raises ModelStoreError when it is missing or empty."""
    return read_pointer_state(model_folder).version


def read_pointer_state(model_folder: Path) -> Pointer:
    """``current``'s version and sequence (0 for a pointer written without one)."""
    path = model_folder / CURRENT
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ModelStoreError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ModelStoreError(f"{path} is not text") from None
    version = lines[0].strip() if lines else ""
    if not version:
        raise ModelStoreError(f"{path} is empty")
    sequence = 0
    for line in lines[1:]:
        if line.startswith(_SEQUENCE):
            digits = line[len(_SEQUENCE):].strip()
            if not digits.isdigit():
                raise ModelStoreError(f"{path}: sequence must be a whole number, got {digits!r}")
            sequence = int(digits)
    return Pointer(version, sequence)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes only."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_part(value: str, what: str) -> str:
    # Names and versions become folder names: nothing that escapes the store.
    if value in {"", ".", "..", CURRENT, HISTORY} or "/" in value or "\\" in value:
        raise ModelStoreError(f"{what} {value!r} cannot be used as a folder name")
    if any(ord(c) < 32 for c in value):  # a NUL byte cannot even reach the file system
        raise ModelStoreError(f"{what} {value!r} contains a control character (a NUL byte, "
                              "a newline; fix the name in the bundle's model.json)")
    if value.startswith("."):
        raise ModelStoreError(f"{what} {value!r} must not start with a dot")
    return value


@dataclass(frozen=True)
class ModelStore:
    root: Path
    #: Whether .joblib (pickle) bundles may be loaded (see Settings.allow_pickle).
    allow_pickle: bool = False
    #: Threads a loaded model's pools may use (see Settings.model_threads).
    threads: int = 1

    def folder(self, name: str) -> Path:
        return self.root / _safe_part(name, "model name")

    def version_path(self, name: str, version: str) -> Path:
        return self.folder(name) / _safe_part(version, "version")

    def list(self) -> list[StoredVersion]:
        out: list[StoredVersion] = []
        if not self.root.is_dir():
            return out
        for model in sorted(p for p in self.root.iterdir() if p.is_dir()):
            current = read_pointer(model) if is_model_folder(model) else None
            for v in sorted(p.name for p in model.iterdir() if (p / MANIFEST_NAME).is_file()):
                out.append(StoredVersion(model.name, v, v == current))
        return out

    def add(self, bundle: Path) -> StoredVersion:
        """Copy a bundle in under its manifest's name and version; never overwrites."""
        man = self._load(bundle).manifest  # raises ModelLoadError: a broken bundle stays out
        dest = self.version_path(man.name, man.version)
        if dest.exists():
            raise ModelStoreError(f"{man.name} {man.version} is already in the store at {dest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = bundle if bundle.is_dir() else bundle.parent
        staging = Path(tempfile.mkdtemp(prefix=f".{man.version}.", dir=dest.parent))
        try:
            extra = () if man.reference is None else (man.reference.artifact,)
            for name in (MANIFEST_NAME, man.artifact, *extra):
                shutil.copy2(src / name, staging / name)
            self._load(staging)  # what was copied is what was checked
            os.rename(staging, dest)  # atomic: a version folder is complete or absent
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return StoredVersion(man.name, man.version, False)

    def current(self, name: str) -> Path:
        folder = self.folder(name)
        if not is_model_folder(folder):
            raise ModelStoreError(f"model {name!r} has no current version in {self.root}")
        return folder / read_pointer(folder)

    def pointer(self, name: str) -> Pointer:
        folder = self.folder(name)
        if not is_model_folder(folder):
            raise ModelStoreError(f"model {name!r} has no current version in {self.root}")
        return read_pointer_state(folder)

    def promote(self, name: str, version: str, at_least: int = 0) -> Path:
        """Point ``current`` at ``version`` (which must exist and load) under the next
        sequence, above ``at_least`` too (the highest sequence already published on a
        control topic); remember the old one. Promoting the current version again
        re-issues it with a new sequence (it then wins over any older instruction)."""
        path = self._checked(name, version)
        folder = self.folder(name)
        with self._locked(name):
            old = read_pointer_state(folder) if is_model_folder(folder) else None
            if old is not None and old.version != version:
                self._write_history([*self.history(name), old.version][-HISTORY_KEEP:], name)
            sequence = max(0 if old is None else old.sequence, at_least) + 1
            atomic_write(folder / CURRENT, Pointer(version, sequence).encode())
        return path

    def rollback(self, name: str, at_least: int = 0) -> Path:
        """Point ``current`` back at the version it named before the last promote (next
        sequence, above ``at_least`` too)."""
        with self._locked(name):
            history = self.history(name)
            if not history:
                raise ModelStoreError(f"model {name!r} has no previous version to roll back to")
            previous = history[-1]
            path = self._checked(name, previous)
            sequence = max(self.pointer(name).sequence, at_least) + 1
            atomic_write(self.folder(name) / CURRENT, Pointer(previous, sequence).encode())
            self._write_history(history[:-1], name)
        return path

    def history(self, name: str) -> builtins.list[str]:
        path = self.folder(name) / HISTORY
        if not path.is_file():
            return []
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ModelStoreError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
            raise ModelStoreError(f"{path} must be a JSON list of versions")
        return data

    def _write_history(self, versions: builtins.list[str], name: str) -> None:
        atomic_write(self.folder(name) / HISTORY, orjson.dumps(versions) + b"\n")

    def _checked(self, name: str, version: str) -> Path:
        path = self.version_path(name, version)
        if not (path / MANIFEST_NAME).is_file():
            raise ModelStoreError(f"{name} {version} is not in the store {self.root}")
        man = self._load(path).manifest  # raises ModelLoadError with the reason
        if (man.name, man.version) != (name, version):
            raise ModelStoreError(f"{path} holds {man.name} {man.version}, not {name} {version}")
        return path

    def _load(self, path: Path) -> ModelBundle:
        return load_checked(path, allow_pickle=self.allow_pickle, threads=self.threads)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """One promote or rollback of ``name`` at a time: the sequence never repeats."""
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)  # the folder itself: no lock file left behind
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
