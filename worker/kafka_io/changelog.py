"""Reading the monitor's state back from its compacted changelog topics, committed
records only, with restore progress reported as it goes."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from worker.errors import KafkaFatalError
from worker.kafka_io.config import Connection, Role, client_config
from worker.kafka_io.watch import CONNECTION_ERRORS

log = logging.getLogger(__name__)

#: How long a restore asks again for a partition's offsets that the broker cannot give yet
#: (a leader moving during a broker restart): the restore runs inside the assignment, and
#: an exception there ended the monitor (exit 1) in a chaos hour's broker stop.
OFFSETS_RETRY_S: Final = 60.0
#: Errors of an offsets request that a moment later may not be there: a failed connection,
#: or a partition between two leaders.
_PASSING: Final = CONNECTION_ERRORS | frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_COORDINATOR, KafkaError._WAIT_COORD,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.OFFSET_NOT_AVAILABLE})


def offsets_of(c: Consumer, tp: TopicPartition, budget_s: float = OFFSETS_RETRY_S,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> tuple[int, int]:
    """(log start, end) offsets of ``tp``, asked again for ``budget_s`` while the broker
    answers with an error that passes (a partition without a leader for a moment); then,
    or on any other error, a KafkaFatalError naming the partition."""
    deadline, told = clock() + budget_s, False
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, 30)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            passing = err is not None and (err.code() in _PASSING or err.retriable())
            if not passing or clock() >= deadline:
                raise KafkaFatalError(f"restoring {tp.topic}[{tp.partition}]: the broker "
                                      f"gives no offsets: {exc}") from exc
            if not told:  # one line, not one a second
                log.warning("restoring %s[%d]: no offsets yet (%s); asking again for up to "
                            "%.0fs", tp.topic, tp.partition, err.str() if err else exc,
                            budget_s)
                told = True
            sleep(1.0)


def read_since(
    conn: Connection, topic: str, partition: int, since_ms: int, end: int,
    timeout_s: float = 120.0,
) -> Iterator[bytes | None]:
    """Committed values of one partition from the first record at or after ``since_ms``
    (broker time) up to offset ``end`` (exclusive), oldest first: the records a restarted
    reader had already read, so that it resumes at ``end`` without losing them."""
    if end <= 0:
        return
    c = Consumer(client_config(Role.RESTORE, conn,
                               fixed={"group.id": f"restore-{uuid.uuid4().hex}"}))
    try:
        start = c.offsets_for_times([TopicPartition(topic, partition, since_ms)], 30)[0]
        if start.offset < 0 or start.offset >= end:
            return
        c.assign([TopicPartition(topic, partition, start.offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in c.consume(5000, 1.0):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    return
                if err is None:
                    if (m.offset() or 0) >= end:
                        return
                    yield m.value()
        raise KafkaFatalError(f"restoring {topic}[{partition}] took over {timeout_s:.0f}s")
    finally:
        c.close()


def watermarks(conn: Connection, topic: str, partition: int) -> tuple[int, int]:
    """(log start, end) offsets of one partition."""
    c = Consumer(client_config(Role.RESTORE, conn,
                               fixed={"group.id": f"restore-{uuid.uuid4().hex}"}))
    try:
        return offsets_of(c, TopicPartition(topic, partition))
    finally:
        c.close()


class RestoreWatch(Protocol):
    """Who hears how far a restore got (probes.RestoreProgress: gauges and liveness)."""

    def started(self, offsets: int) -> None: ...
    def advanced(self, records: int, offsets: int) -> None: ...
    def finished(self) -> None: ...


def read_changelog(
    conn: Connection, topic: str, partition: int, timeout_s: float = 120.0,
    start: int | None = None, watch: RestoreWatch | None = None,
) -> Iterator[tuple[bytes, bytes | None, int]]:
    """Every committed (key, value, offset) of one changelog partition from ``start``
    (None: its beginning), oldest first. ``timeout_s`` bounds a restore that stops moving
    (no record for that long), not a long one that moves: a large changelog takes what
    it takes. ``watch`` hears its progress, a poll at a time."""
    c = Consumer(client_config(Role.RESTORE, conn,
                               fixed={"group.id": f"restore-{uuid.uuid4().hex}"}))
    started = False
    try:
        low, high = offsets_of(c, TopicPartition(topic, partition))
        if high <= max(low, start or 0):
            return
        first = low if start is None else max(start, low)
        if watch is not None:
            watch.started(high - first)
            started = True
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING if start is None
                                 else first)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msgs = c.consume(5000, 1.0)
            good = [m for m in msgs if m.error() is None]
            if good:
                deadline = time.monotonic() + timeout_s
                position = min(high, (good[-1].offset() or 0) + 1)
                if watch is not None:
                    watch.advanced(len(good), position - first)
                first = position
            for m in good:
                if m.key() is not None:
                    yield m.key() or b"", m.value(), m.offset() or 0
            if any(e is not None and e.code() == KafkaError._PARTITION_EOF
                   for e in (m.error() for m in msgs)):
                return
        raise KafkaFatalError(f"restoring {topic}[{partition}]: nothing read for "
                              f"{timeout_s:.0f}s")
    finally:
        if started and watch is not None:
            watch.finished()
        c.close()
