"""The worker's clients: a batch consumer that commits explicit offsets and an
idempotent producer whose flush reports (and re-sends) failed deliveries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from worker.config import Settings
from worker.errors import KafkaFatalError
from worker.kafka_io.config import Role, client_config, connection

log = logging.getLogger(__name__)


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
    """The worker's consumer: at most ``batch_wait_ms`` of fetch wait, so a batch never
    waits on the broker longer than on the loop."""
    tuning = {"fetch.wait.max.ms": max(1, min(100, s.batch_wait_ms))}
    return client_config(Role.CONSUMER, connection(s, s.worker_id), tuning,
                         fixed={"group.id": s.group})


def producer_config(s: Settings) -> dict[str, Any]:
    return client_config(Role.PRODUCER, connection(s, s.worker_id))


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
        self._c = Consumer({**conf, "error_cb": self._error})
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


def publish(conf: Mapping[str, Any], messages: list[tuple[str, bytes, bytes]],
            timeout_s: float) -> None:  # fmt: skip
    """Send (topic, key, value) messages and wait until the broker has every one (batch
    jobs: a few records that must not be lost); KafkaFatalError when it will not take them."""
    producer = BatchProducer(conf)
    for topic, key, value in messages:
        producer.send(topic, value, key)
    failed = producer.flush_all(timeout_s)
    if failed:
        producer.resend(failed)
        failed = producer.flush_all(timeout_s)
    if failed:
        err = failed[0].error()
        why = err.str() if err else "unknown error"
        raise KafkaFatalError(f"the broker did not take {len(failed)} message(s) for "
                              f"{failed[0].topic()}: {why}")  # fmt: skip
