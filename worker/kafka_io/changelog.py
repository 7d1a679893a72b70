"""Reading the monitor's state back from its compacted changelog topics, committed
records only, with restore progress reported as it goes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from worker.errors import KafkaFatalError
from worker.kafka_io.config import Connection, Role, client_config


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
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), 30)
        return int(low), int(high)
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
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), 30)
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
