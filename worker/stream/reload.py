"""Hot model reload, the decisions: which instruction wins, checking a candidate bundle,
and the refusal record. No Kafka, no metrics, no clock (times are passed in); the loop
applies the outcome between two batches (worker/stream/swap.py).

Instructions come from the store's ``current`` pointer and from the model-control
topic. Each carries the sequence that ``models promote``/``rollback`` gave it (the
store's own counter, written into both the pointer and the control record), and the
highest sequence wins: no clock decides, so a record stamped in the future cannot pin
a model. Instructions without a sequence (pointers and records written before
sequences existed) count as sequence 0 and, among themselves, are ordered by their
time stamps (the pointer file's mtime, the record's timestamp) as before. A restarted
worker that reads the whole control topic ends up where the fleet is. A candidate is
loaded and checked away from the loop (worker/stream/reloader.py); the loop only
swaps a bundle that passed.

Shadow instructions (``{"name", "shadow": version | null, "sequence"}``, keyed
``name|shadow``) set or stop the model every batch is also scored with. They have one
source, the control topic, and their own sequence per model: whoever publishes one
(``models shadow``, ``retrain --shadow``) reads the topic and takes the highest shadow
sequence on it plus one. The store's counter is not used, since a shadow changes no
pointer. The highest shadow sequence wins, as for promotions; shadow records without
one count as 0 and, among themselves, the last on the topic wins (one key, one
partition: the broker's order).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import orjson

from worker.core.records import escape_key_part
from worker.errors import ModelLoadError, ScoringError
from worker.model.bundle import ModelBundle
from worker.model.checked import load_checked
from worker.model.store import ModelStore

log = logging.getLogger(__name__)
REFUSED_ALERT: Final = "model_refused"


@dataclass(frozen=True, slots=True)
class Request:
    """Serve ``version``: instruction number ``sequence`` (0: none), stamped ``at_ms``,
    from ``source`` (pointer or control)."""

    version: str
    at_ms: int
    source: str
    sequence: int = 0

    @property
    def order(self) -> tuple[int, int]:
        """Sequence first; the time stamp only orders instructions without one."""
        return (self.sequence, self.at_ms if self.sequence == 0 else 0)


@dataclass(frozen=True, slots=True)
class Swap:
    bundle: ModelBundle
    source: str


@dataclass(frozen=True, slots=True)
class ShadowSwap:
    """Score every batch with ``bundle`` too, as the shadow model (None: stop)."""

    bundle: ModelBundle | None
    source: str


@dataclass(frozen=True, slots=True)
class Refusal:
    model: str
    version: str
    reason: str
    at_ms: int
    source: str


ReloadEvent: TypeAlias = Swap | ShadowSwap | Refusal


def newest(requests: Sequence[Request], after: tuple[int, int]) -> Request | None:
    """The highest instruction above ``after`` (a ``Request.order``); ties: the later one
    in the list."""
    fresh = [(r.order, i, r) for i, r in enumerate(requests) if r.order > after]
    return max(fresh)[2] if fresh else None


def parse_control(value: bytes | None, name: str) -> tuple[str, int] | None:
    """The version a control record asks ``name`` to serve and its sequence (0 when the
    record has none); None when it is not for us or unusable."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        log.warning("model control record is not JSON; ignored")
        return None
    if not isinstance(data, dict) or data.get("name") != name:
        return None
    if "shadow" in data and "version" not in data:
        return None  # a shadow instruction (parse_shadow)
    version = data.get("version")
    if not isinstance(version, str) or not version:
        log.warning("model control record for %s has no version; ignored", name)
        return None
    sequence = data.get("sequence", 0)
    if type(sequence) is not int or sequence < 0:
        log.warning("model control record for %s has a bad sequence; ignored", name)
        return None
    return version, sequence


@dataclass(frozen=True, slots=True)
class ShadowInstruction:
    """Score every batch with ``version`` too, as the shadow model (None: stop); number
    ``sequence`` of the model's shadow instructions (0: none)."""

    version: str | None
    sequence: int = 0


def parse_shadow(value: bytes | None, name: str) -> ShadowInstruction | None:
    """The shadow instruction a control record gives ``name``; None when the record is
    not one (see ``shadow_record``) or is unusable."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("name") != name or "shadow" not in data:
        return None
    version, sequence = data["shadow"], data.get("sequence", 0)
    if version is not None and (not isinstance(version, str) or not version):
        log.warning("model control record for %s has a bad shadow version; ignored", name)
        return None
    if type(sequence) is not int or sequence < 0:
        log.warning("shadow control record for %s has a bad sequence; ignored", name)
        return None
    return ShadowInstruction(version, sequence)


def newest_shadow(
    found: Sequence[ShadowInstruction], after: int
) -> ShadowInstruction | None:
    """The shadow instruction to follow among ``found`` (in topic order), given that
    number ``after`` is in force (-1: none yet): the highest sequence above it; records
    without a sequence only while no sequenced one is in force, the last one winning."""
    fresh = [(s.sequence, i, s) for i, s in enumerate(found)
             if s.sequence > after or (s.sequence == 0 and after <= 0)]
    return max(fresh)[2] if fresh else None


def shadow_record(name: str, version: str | None, sequence: int) -> tuple[bytes, bytes]:
    """Key and value of the control record that makes every worker of ``name`` score each
    batch with ``version`` too, as its shadow model (None: stop). Keyed apart from
    promotions, so compaction keeps the latest of each."""
    value = {"name": name, "shadow": version, "sequence": sequence}
    return f"{name}|shadow".encode(), orjson.dumps(value)


def control_record(name: str, version: str, sequence: int) -> tuple[bytes, bytes]:
    """Key and value of a model-control record (what ``models promote`` publishes; keyed
    by name, so compaction keeps the latest per model)."""
    return name.encode(), orjson.dumps({"name": name, "version": version, "sequence": sequence})


def check_candidate(store: ModelStore, name: str, version: str) -> ModelBundle:
    """Load ``name``/``version`` from the store with every check, its self-test included;
    raises ScoringError."""
    path = store.version_path(name, version)
    if not path.is_dir():
        raise ModelLoadError(f"{name} {version} is not in the store {store.root}")
    bundle = load_checked(path, allow_pickle=store.allow_pickle, threads=store.threads)
    if (bundle.name, bundle.version) != (name, version):
        raise ModelLoadError(f"{path} holds {bundle.name} {bundle.version}")
    return bundle


def attempt(store: ModelStore, name: str, req: Request, now_ms: int) -> ReloadEvent:
    try:
        return Swap(check_candidate(store, name, req.version), req.source)
    except ScoringError as exc:
        return Refusal(name, req.version, " ".join(str(exc).split()), now_ms, req.source)


def refusal_record(r: Refusal, worker_id: str) -> tuple[bytes, bytes]:
    """Key and value of the alert (schemas/model_refusal.schema.json)."""
    key = "|".join(escape_key_part(p) for p in (REFUSED_ALERT, r.model, r.version))
    value = {"alert": REFUSED_ALERT, "status": "firing", "model": r.model,
             "model_version": r.version, "reason": r.reason, "at": r.at_ms,
             "source": r.source, "worker_id": worker_id}
    return key.encode(), orjson.dumps(value)


def store_of(model_folder: Path, allow_pickle: bool = False,
             threads: int = 1) -> tuple[ModelStore, str]:
    """``STORE/<name>`` -> (the store, the model name)."""
    return ModelStore(model_folder.parent, allow_pickle, threads), model_folder.name
