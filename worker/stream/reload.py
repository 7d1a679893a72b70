"""Hot model reload, the decisions: which instruction wins, checking a candidate bundle,
and the refusal record. No Kafka, no metrics, no clock (times are passed in); the loop
applies the outcome between two batches (worker/stream/swap.py).

Instructions come from the store's ``current`` pointer (stamped with the file's
mtime) and from the model-control topic (stamped with the record's timestamp);
the newest instruction wins, so a restarted worker that reads the whole control
topic ends up where the fleet is. A candidate is loaded and checked away from
the loop (worker/stream/reloader.py); the loop only swaps a bundle that passed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import numpy as np
import orjson

from worker.core.records import escape_key_part
from worker.core.scoring import score_matrix
from worker.errors import ModelLoadError, ScoringError
from worker.model.bundle import ModelBundle, load_bundle
from worker.model.store import ModelStore

log = logging.getLogger(__name__)
REFUSED_ALERT: Final = "model_refused"


@dataclass(frozen=True, slots=True)
class Request:
    """Serve ``version``: an instruction issued at ``at_ms`` by ``source``."""

    version: str
    at_ms: int
    source: str


@dataclass(frozen=True, slots=True)
class Swap:
    bundle: ModelBundle
    source: str


@dataclass(frozen=True, slots=True)
class Refusal:
    model: str
    version: str
    reason: str
    at_ms: int
    source: str


ReloadEvent: TypeAlias = Swap | Refusal


def newest(requests: Sequence[Request], after_ms: int) -> Request | None:
    """The latest instruction issued after ``after_ms`` (ties: the later one in the list)."""
    fresh = [(r.at_ms, i, r) for i, r in enumerate(requests) if r.at_ms > after_ms]
    return max(fresh)[2] if fresh else None


def parse_control(value: bytes | None, name: str) -> str | None:
    """The version a control record asks ``name`` to serve; None when it is not for us."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        log.warning("model control record is not JSON; ignored")
        return None
    if not isinstance(data, dict) or data.get("name") != name:
        return None
    version = data.get("version")
    if not isinstance(version, str) or not version:
        log.warning("model control record for %s has no version; ignored", name)
        return None
    return version


def smoke_check(bundle: ModelBundle) -> None:
    """Score a few plain rows; the outputs must have the right shape and be finite."""
    try:
        output = score_matrix(bundle, bundle.runtime.smoke_batch()).output
    except Exception as exc:  # any estimator error refuses the bundle
        raise ModelLoadError(f"smoke batch failed: {type(exc).__name__}: {exc}") from None
    if not np.isfinite(output).all():
        raise ModelLoadError("smoke batch returned non-finite outputs")


def check_candidate(store: ModelStore, name: str, version: str) -> ModelBundle:
    """Load ``name``/``version`` from the store with every check; raises ScoringError."""
    path = store.version_path(name, version)
    if not path.is_dir():
        raise ModelLoadError(f"{name} {version} is not in the store {store.root}")
    bundle = load_bundle(path)
    if (bundle.name, bundle.version) != (name, version):
        raise ModelLoadError(f"{path} holds {bundle.name} {bundle.version}")
    smoke_check(bundle)
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
             "source": r.source, "worker_id": worker_id}  # fmt: skip
    return key.encode(), orjson.dumps(value)


def store_of(model_folder: Path) -> tuple[ModelStore, str]:
    """``STORE/<name>`` -> (the store, the model name)."""
    return ModelStore(model_folder.parent), model_folder.name
