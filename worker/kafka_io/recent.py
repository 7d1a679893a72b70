"""Reading back what a topic received lately: the monitor's status page, after a restart.

Every partition is read from the first record at or after ``since_ms`` (broker
timestamps, ``offsets_for_times``) up to its end as of the start, committed records
only, so a page rebuilt from its own outputs shows what the monitor really published.
Best effort: a Kafka error ends the reading with a warning, never the caller.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.kafka_io.config import Connection, Role, client_config

log = logging.getLogger(__name__)


def read_recent(conn: Connection, topic: str, since_ms: int, timeout_s: float = 30.0
                ) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of every committed record of ``topic`` since ``since_ms``, per partition
    in order; stops at ``timeout_s`` with what it has (this is a convenience, not state)."""
    c = Consumer(client_config(Role.RESTORE, conn,
                               fixed={"group.id": f"recent-{uuid.uuid4().hex}"}))
    try:
        yield from _read(c, topic, since_ms, timeout_s)
    except KafkaException as exc:
        log.warning("reading back %s stopped: %s", topic, exc)
    finally:
        c.close()


def _read(c: Consumer, topic: str, since_ms: int, timeout_s: float
          ) -> Iterator[tuple[bytes | None, bytes]]:
    meta = c.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:
        return
    wanted = [TopicPartition(topic, p, since_ms) for p in meta.partitions]
    starts = [tp for tp in c.offsets_for_times(wanted, timeout=10) if tp.offset >= 0]
    if not starts:
        return  # nothing that recent
    c.assign(starts)
    open_parts, deadline = {tp.partition for tp in starts}, time.monotonic() + timeout_s
    while open_parts and time.monotonic() < deadline:
        for m in c.consume(5000, 1.0):
            err = m.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                open_parts.discard(m.partition() or 0)
            elif err is None and m.value() is not None:
                yield m.key(), m.value() or b""
