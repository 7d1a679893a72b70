"""Admin helpers: topic creation and deletion, reading a topic back (readiness: startup.py)."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.errors import KafkaFatalError
from worker.kafka_io.config import Connection, Role, client_config


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def admin(bootstrap: str, extra: Mapping[str, str] | None = None) -> AdminClient:
    return AdminClient(client_config(Role.ADMIN, Connection(bootstrap, dict(extra or {}))))


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create topics (name -> partitions); existing ones are kept.

    The replication factor is the cluster's own ``default.replication.factor`` (-1, KIP-464):
    1 on the local broker, what the operators chose (typically 3) on a real cluster, so
    the monitor's internal topics and changelogs are as durable as the rest.
    """
    client = admin(bootstrap, extra)
    new = [NewTopic(n, num_partitions=p, replication_factor=-1, config=dict(config or {}))
           for n, p in topics.items()]
    for name, fut in client.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaFatalError(f"cannot create topic {name}: {exc}") from exc
    _await_topics(client, list(topics), timeout)
    client.poll(0)  # an admin client's log lines reach the logger only through poll()


def _await_topics(client: AdminClient, names: list[str], timeout: float) -> None:
    """Topic creation returns before every partition has a leader; wait for that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = client.list_topics(timeout=5.0)
        ok = all(
            n in md.topics
            and md.topics[n].error is None
            and md.topics[n].partitions
            and all(p.leader >= 0 for p in md.topics[n].partitions.values())
            for n in names
        )
        if ok:
            return
        time.sleep(0.1)
    raise KafkaFatalError(f"topics {names} have no leaders after {timeout:.0f}s")


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    if not names:
        return
    client = admin(bootstrap)  # kept alive until the futures resolve
    for fut in client.delete_topics(names, operation_timeout=timeout).values():
        # Already gone, or slow to go, is fine: deletion is best-effort cleanup.
        with contextlib.suppress(KafkaException, TimeoutError):
            fut.result(timeout)


@dataclass(frozen=True, slots=True)
class Received:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def drain(
    bootstrap: str, topic: str, expect: int, timeout_s: float, idle_s: float = 2.0
) -> list[Received]:
    """Read a topic from its start until ``expect`` messages, or ``idle_s`` of silence
    after the deadline (for demos and benchmarks; not the worker's path)."""
    c = Consumer(client_config(Role.READER, Connection(bootstrap),
                               fixed={"group.id": f"drain-{uuid.uuid4().hex}"}))
    c.subscribe([topic])
    out: list[Received] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while len(out) < expect and time.monotonic() < deadline + idle_s:
        msgs = c.consume(5000, 0.5)
        for m in msgs:
            if m.error() is None:
                out.append(Received(m.key(), m.value(), m.timestamp()[1]))
        if msgs:
            last = time.monotonic()
        elif time.monotonic() > deadline and time.monotonic() - last > idle_s:
            break
    c.close()
    return out


def upsert_scram_user(bootstrap: str, user: str, password: str, timeout: float = 30.0) -> None:
    """Create or update a SCRAM-SHA-512 user (kafka-local --sasl; KRaft keeps it in its
    metadata, so it works on a formatted cluster too)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    change = UserScramCredentialUpsertion(user, info, password.encode())
    client = admin(bootstrap)  # kept alive until the futures resolve
    for fut in client.alter_user_scram_credentials([change]).values():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            raise KafkaFatalError(f"cannot create the SCRAM user {user}: {exc}") from exc
