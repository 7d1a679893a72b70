"""Model-control instructions, issued: the one code path of ``models promote``,
``rollback`` and ``shadow`` (with ``--control-topic``) and of ``retrain
--promote-if-better``/``--shadow``.

A promote or rollback moves the store's ``current`` pointer under the next sequence,
above the highest one already on the control topic, and then publishes the control
record with that very sequence (the pointer first: workers that follow only the store
see it too). An MLflow alias has no
sequence of its own: ``announce`` takes the highest promote sequence on the topic plus
one. A shadow instruction has no pointer: its sequence is the highest shadow
sequence on the topic plus one. Workers apply the highest sequence of each kind
(worker/stream/reload.py says how they order them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker import kafka_io
from worker.kafka_io.config import Connection, Role, client_config
from worker.model.store import ModelStore, Pointer
from worker.stream.reload import (
    check_candidate,
    control_record,
    parse_control,
    parse_shadow,
    shadow_record,
)


@dataclass(frozen=True)
class ControlTopic:
    """Where instructions are published, and how to reach the broker."""

    topic: str
    connection: Connection
    timeout_s: float = 30.0

    def conf(self, role: Role) -> dict[str, Any]:
        return client_config(role, self.connection)


@dataclass(frozen=True, slots=True)
class Published:
    """The highest sequences on a control topic for one model (0: none)."""

    promote: int = 0
    shadow: int = 0


def published(target: ControlTopic | None, name: str) -> Published:
    """What the control topic holds for ``name`` now (nothing without a topic)."""
    if target is None:
        return Published()
    records = kafka_io.read_control(target.conf(Role.READER), target.topic, target.timeout_s)
    promote = shadow = 0
    for r in records:
        if (p := parse_control(r.value, name)) is not None:
            promote = max(promote, p[1])
        if (s := parse_shadow(r.value, name)) is not None:
            shadow = max(shadow, s.sequence)
    return Published(promote, shadow)


def promote(store: ModelStore, name: str, version: str, target: ControlTopic | None) -> Pointer:
    """Make ``version`` current (next sequence) and announce it; the new pointer."""
    store.promote(name, version, published(target, name).promote)
    return _announce(store, name, target)


def rollback(store: ModelStore, name: str, target: ControlTopic | None) -> Pointer:
    """Make the previous current version current again (next sequence) and announce it."""
    store.rollback(name, published(target, name).promote)
    return _announce(store, name, target)


def shadow(store: ModelStore, name: str, version: str | None, target: ControlTopic) -> int:
    """Make ``version`` every worker's shadow model (None: stop shadow scoring); the
    instruction's sequence. The version must load with every check, as for a promote."""
    if version is not None:
        check_candidate(store, name, version)
    sequence = published(target, name).shadow + 1
    key, value = shadow_record(name, version, sequence)
    kafka_io.publish_control(target.conf(Role.PRODUCER), target.topic, key, value,
                             target.timeout_s)
    return sequence


def announce(name: str, version: str, target: ControlTopic) -> int:
    """Tell every worker of ``name`` to serve ``version`` when there is no store pointer to
    move (an MLflow alias moved: the alias is the truth, the record is how the fleet hears
    of it at once): the highest promote sequence on the topic plus one; that sequence."""
    sequence = published(target, name).promote + 1
    key, value = control_record(name, version, sequence)
    kafka_io.publish_control(target.conf(Role.PRODUCER), target.topic, key, value,
                             target.timeout_s)
    return sequence


def _announce(store: ModelStore, name: str, target: ControlTopic | None) -> Pointer:
    pointer = store.pointer(name)
    if target is not None:
        key, value = control_record(name, pointer.version, pointer.sequence)
        kafka_io.publish_control(target.conf(Role.PRODUCER), target.topic, key, value,
                                 target.timeout_s)
    return pointer

