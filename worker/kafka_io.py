"""Everything that talks to Kafka. The only module that imports confluent_kafka."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.config import Settings
from worker.errors import KafkaFatalError

log = logging.getLogger(__name__)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def admin(bootstrap: str, extra: Mapping[str, str] | None = None) -> AdminClient:
    conf: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap, **(extra or {})}
    return AdminClient(conf)


def wait_for_broker(
    bootstrap: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    extra: Mapping[str, str] | None = None,
) -> float:
    """Block until a metadata request succeeds; return the seconds it took.

    ``alive`` lets a launcher give up at once when the process it waits for died.
    """
    t0 = time.monotonic()
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    host = host.strip("[]")
    # Wait for the socket first: librdkafka logs every refused connection to stderr.
    while not port_open(host, int(port)) and time.monotonic() - t0 < timeout:
        if not alive():
            raise KafkaFatalError(f"broker process for {bootstrap} exited during startup")
        time.sleep(0.2)
    client = admin(bootstrap, extra)
    last: Exception | None = None
    while time.monotonic() - t0 < timeout:
        if not alive():
            raise KafkaFatalError(f"broker process for {bootstrap} exited during startup")
        try:
            md = client.list_topics(timeout=2.0)
            if md.brokers:
                return time.monotonic() - t0
        except KafkaException as exc:
            last = exc
        time.sleep(0.3)
    raise KafkaFatalError(f"no metadata from {bootstrap} within {timeout:.0f}s ({last})")


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create topics (name -> partitions) with replication factor 1; existing ones are kept."""
    client = admin(bootstrap, extra)
    new = [NewTopic(n, num_partitions=p, replication_factor=1, config=dict(config or {}))
           for n, p in topics.items()]  # fmt: skip
    for name, fut in client.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaFatalError(f"cannot create topic {name}: {exc}") from exc
    _await_topics(client, list(topics), timeout)


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
    for fut in admin(bootstrap).delete_topics(names, operation_timeout=timeout).values():
        # Already gone is fine: deletion is best-effort cleanup.
        with contextlib.suppress(KafkaException):
            fut.result(timeout)


class Message(Protocol):
    """The parts of a consumed confluent_kafka Message the worker uses."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> KafkaError | None: ...


Headers = list[tuple[str, str | bytes | None]]


def consumer_config(s: Settings) -> dict[str, Any]:
    """Consumer properties: our defaults, then the user's librdkafka pass-through."""
    return {
        "bootstrap.servers": s.bootstrap,
        "group.id": s.group,
        "client.id": s.worker_id,
        "auto.offset.reset": "earliest",
        # Cooperative rebalancing: a joining worker does not stop the others' partitions.
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.wait.max.ms": max(1, min(100, s.batch_wait_ms)),
        **s.kafka,
    }


def producer_config(s: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": s.bootstrap, "client.id": s.worker_id, **s.kafka}


def _is_fatal(err: KafkaError) -> bool:
    """Errors no retry can fix: librdkafka's fatal ones and authentication failures."""
    return bool(err.fatal()) or err.code() in (
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )


class BatchConsumer:
    """A consumer group member that hands out batches and commits explicit offsets."""

    def __init__(self, conf: Mapping[str, Any], topics: list[str],
                 on_change: Callable[[str, int], None]) -> None:  # fmt: skip
        self.fatal: KafkaError | None = None
        self._on_change = on_change
        self._owned: set[tuple[str, int]] = set()
        self._lost_parts: set[tuple[str, int]] = set()
        #: Called from inside consume() before partitions are taken away.
        self.before_revoke: Callable[[], None] | None = None
        full = {
            **conf,
            # Offsets are committed by hand, only after the batch's outputs are acknowledged.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "error_cb": self._error,
        }
        self._c = Consumer(full)
        self._c.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked,
                          on_lost=self._lost)  # fmt: skip

    def _error(self, err: KafkaError) -> None:
        if _is_fatal(err):
            self.fatal = err
        else:
            log.warning("kafka consumer: %s", err)

    # With cooperative rebalancing the callbacks carry only the partitions that
    # change, so the full assignment is tracked here.
    def _assigned(self, c: Consumer, parts: list[TopicPartition]) -> None:
        self._owned |= {(p.topic, p.partition) for p in parts}
        self._on_change("assign", len(self._owned))

    def _revoked(self, c: Consumer, parts: list[TopicPartition]) -> None:
        # Still the owner here: settle what was scored so the next owner starts after it.
        if self.before_revoke is not None and parts:
            self.before_revoke()
        self._owned -= {(p.topic, p.partition) for p in parts}
        self._on_change("revoke", len(self._owned))

    def _lost(self, c: Consumer, parts: list[TopicPartition]) -> None:
        # Lost (not revoked): another member may own them already, so their offsets
        # must not be committed by us any more.
        lost = {(p.topic, p.partition) for p in parts}
        self._lost_parts |= lost
        self._owned -= lost
        self._on_change("lost", len(self._owned))

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to max_messages data messages; error events are logged or raised if fatal."""
        msgs = self._c.consume(max_messages, timeout_s)
        if self.fatal is not None:
            raise KafkaFatalError(f"kafka consumer: {self.fatal.str()}")
        good: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif _is_fatal(err):
                raise KafkaFatalError(f"kafka consumer: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer: %s", err.str())
        return good

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> str | None:
        """Commit the next offset to read per (topic, partition), synchronously.

        Returns None on success, else why it failed; a fatal error raises.
        """
        if self._lost_parts:
            offsets = {tp: o for tp, o in offsets.items() if tp not in self._lost_parts}
            self._lost_parts.clear()
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if not tps:
            return None
        try:
            self._c.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and _is_fatal(err):
                raise KafkaFatalError(f"kafka commit: {err.str()}") from exc
            return str(exc)
        return None

    def close(self) -> None:
        """Leave the group at once so its partitions move to the other workers."""
        self._c.close()


class BatchProducer:
    """An idempotent producer whose flush reports, and re-sends, failed deliveries."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.failed: list[Message] = []
        self.fatal: KafkaError | None = None
        full = {
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            **conf,
            # Only failures call back into Python: a callback per message costs throughput.
            "delivery.report.only.error": True,
            "on_delivery": self._delivered,
            "error_cb": self._error,
        }
        self._p = Producer(full)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append(msg)

    def _error(self, err: KafkaError) -> None:
        if _is_fatal(err):
            self.fatal = err
        else:
            log.warning("kafka producer: %s", err)

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None = None) -> None:  # fmt: skip
        while True:
            try:
                self._p.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                self._p.poll(0.05)  # local queue full: let deliveries drain

    def flush_all(self, timeout_s: float) -> list[Message]:
        """Wait until no message is queued; return the ones the broker did not take.

        A broker that is away keeps this waiting (the loop stalls and /healthz says
        so) rather than giving up on messages whose offsets are not committed yet.
        """
        while (left := self._p.flush(timeout_s)) > 0:
            if self.fatal is not None:
                break
            log.warning("%d messages still waiting for the broker after %.0fs", left, timeout_s)
        if self.fatal is not None:
            raise KafkaFatalError(f"kafka producer: {self.fatal.str()}")
        failed, self.failed = self.failed, []
        return failed

    def resend(self, msgs: list[Message]) -> None:
        for m in msgs:
            headers = cast(Headers | None, getattr(m, "headers", lambda: None)())
            self.send(m.topic() or "", m.value(), m.key(), headers)

    def poll(self) -> None:
        self._p.poll(0)


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
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"drain-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
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
