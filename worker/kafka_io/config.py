"""The one builder of librdkafka configuration.

Every client the product opens (the worker's consumer and producer, the control
reader, the monitor's transactional pair, changelog readers, admin clients) gets
its properties from ``client_config``: the connection (bootstrap servers, the
user's ``kafka`` pass-through, a client id), then the role's defaults. Precedence,
lowest first: the role's defaults < the caller's tuning < the user's properties <
what the role's code depends on (manual commits, transactions), which no setting may
override because correctness rests on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol


class Role(StrEnum):
    CONSUMER = "consumer"  # the worker's group member; commits by hand after acks
    PRODUCER = "producer"  # the worker's outputs (idempotent)
    CONTROL = "control"  # reads the model-control topic from its start, commits nothing
    TX_CONSUMER = "tx-consumer"  # the monitor's group member (read_committed)
    TX_PRODUCER = "tx-producer"  # the monitor's transactional producer
    RESTORE = "restore"  # reads a changelog partition back (read_committed)
    READER = "reader"  # tools: reads a topic from its start
    RANGE = "range"  # batch jobs (retrain): reads a time range by assignment, commits nothing
    ADMIN = "admin"  # metadata, topic creation


_DEFAULTS: Final[Mapping[Role, Mapping[str, Any]]] = {
    Role.CONSUMER: {
        "auto.offset.reset": "earliest",
        # Cooperative rebalancing: a joining worker does not stop the others' partitions.
        "partition.assignment.strategy": "cooperative-sticky",
    },
    Role.PRODUCER: {"enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"},
    Role.CONTROL: {
        "auto.offset.reset": "earliest",
        # A control topic created after the worker started is picked up soon.
        "topic.metadata.refresh.interval.ms": 5000,
    },
    Role.TX_CONSUMER: {
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # The monitor's prefetch: 16 MiB keeps up with a backlog; the default 64 MiB
        # only adds resident memory.
        "queued.max.messages.kbytes": 16384,
    },
    Role.TX_PRODUCER: {"linger.ms": 5, "transaction.timeout.ms": 30_000},
    Role.RESTORE: {},
    Role.READER: {"auto.offset.reset": "earliest"},
    # Whole fetches: a batch job reads ranges of millions of records.
    Role.RANGE: {"fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 8_388_608,
                 # Retention removed the range's start meanwhile: read what is left of it.
                 "auto.offset.reset": "earliest"},
    Role.ADMIN: {},
}

_FIXED: Final[Mapping[Role, Mapping[str, Any]]] = {
    # Offsets are committed by hand, only after the batch's outputs are acknowledged.
    Role.CONSUMER: {"enable.auto.commit": False, "enable.auto.offset.store": False},
    Role.CONTROL: {"enable.auto.commit": False, "enable.auto.offset.store": False},
    Role.TX_CONSUMER: {"enable.auto.commit": False, "isolation.level": "read_committed"},
    Role.RESTORE: {
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    },
    Role.READER: {"enable.auto.commit": False},
    # Offsets come from the time index; the end of a partition ends its read.
    Role.RANGE: {"enable.auto.commit": False, "enable.partition.eof": True},
}


class HasConnection(Protocol):
    """Any settings object with the connection fields (worker and monitor settings)."""

    @property
    def bootstrap(self) -> str: ...
    @property
    def kafka(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the brokers are and how to talk to them (TLS, SASL: the ``kafka`` pass-through)."""

    bootstrap: str
    kafka: Mapping[str, str] = field(default_factory=dict)
    client_id: str | None = None


def connection(settings: HasConnection, client_id: str | None = None) -> Connection:
    return Connection(settings.bootstrap, dict(settings.kafka), client_id)


class HasMembership(Protocol):
    """Any settings object with the group fields (worker and monitor settings)."""

    @property
    def group(self) -> str: ...
    @property
    def instance_id(self) -> str: ...
    @property
    def static_membership(self) -> bool: ...
    @property
    def session_timeout_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Membership:
    """How a process belongs to its consumer group."""

    group: str
    #: The static member id (group.instance.id, KIP-345); None: a dynamic member.
    instance_id: str | None
    session_timeout_s: float = 45.0

    def tuning(self) -> dict[str, Any]:
        session_ms = round(self.session_timeout_s * 1000)
        # Three heartbeats per session (Kafka's advice), never sparser than its default 3 s.
        return {"session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, min(3000, session_ms // 3))}

    def fixed(self) -> dict[str, Any]:
        fixed: dict[str, Any] = {"group.id": self.group}
        if self.instance_id is not None:
            fixed["group.instance.id"] = self.instance_id
        return fixed


def membership(settings: HasMembership) -> Membership:
    static = settings.instance_id if settings.static_membership else None
    return Membership(settings.group, static, settings.session_timeout_s)


def client_config(
    role: Role,
    conn: Connection,
    tuning: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    member: Membership | None = None,
) -> dict[str, Any]:
    """librdkafka properties for one client.

    ``tuning``: the caller's defaults for this client (the user's properties win);
    ``fixed``: properties the caller's correctness needs (transactional.id), applied last;
    ``member``: a group member's group and static id (fixed) and session timeout (tuning:
    a ``session.timeout.ms`` of the user's still wins).
    """
    if member is not None:
        tuning = {**member.tuning(), **(tuning or {})}
        fixed = {**member.fixed(), **(fixed or {})}
    conf: dict[str, Any] = {"bootstrap.servers": conn.bootstrap}
    if conn.client_id:
        conf["client.id"] = conn.client_id
    # librdkafka's own log lines go through Python logging: JSON, secrets redacted.
    conf["logger"] = logging.getLogger("librdkafka")
    conf.update(_DEFAULTS[role])
    conf.update(tuning or {})
    conf.update(conn.kafka)
    conf.update(_FIXED.get(role, {}))
    conf.update(fixed or {})
    return conf
