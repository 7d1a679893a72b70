"""Reading the records of a time range of a topic, for batch jobs (``retrain``).

Offsets come from the broker's time index (``offsets_for_times``): per partition
from the first record stamped at or after the start to the first stamped at or
after the end (the high watermark when there is none). Partitions are assigned,
not subscribed: no group, nothing committed. Records whose own timestamp falls
outside the range (producers may stamp out of order) are left out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.errors import ConfigError, KafkaFatalError

_NO_TOPIC = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)


@dataclass(frozen=True, slots=True)
class RangeRecord:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class RangeTooLarge(KafkaFatalError):
    """The range holds more records than the caller allows."""


def read_range(
    conf: Mapping[str, Any],
    topic: str,
    start_ms: int,
    end_ms: int,
    timeout_s: float,
    limit: int,
) -> list[RangeRecord]:
    """Every record of ``topic`` stamped in ``[start_ms, end_ms)``, ordered by
    (timestamp, partition, offset). ``conf``: ``client_config(Role.RANGE, ...)``."""
    c = Consumer({**conf, "group.id": f"range-{uuid.uuid4().hex}"})
    try:
        bounds = _bounds(c, topic, start_ms, end_ms, timeout_s)
        total = sum(hi - lo for lo, hi in bounds.values())
        if total > limit:
            raise RangeTooLarge(f"{topic} holds up to {total} records in the range, more than "
                                f"the limit of {limit}")
        out = _consume(c, topic, bounds, start_ms, end_ms, timeout_s)
    finally:
        c.close()
    out.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    return out


def _bounds(
    c: Consumer, topic: str, start_ms: int, end_ms: int, timeout_s: float
) -> dict[int, tuple[int, int]]:
    """``partition -> [first, end)`` offsets to read."""
    try:
        md = c.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaFatalError(f"no metadata for topic {topic}: {exc}") from None
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        if meta is None or meta.error is None or meta.error.code() in _NO_TOPIC:
            # A name the user gave: their mistake (exit 2), not the broker's failure.
            raise ConfigError(f"topic {topic} does not exist (check the topic settings)")
        raise KafkaFatalError(f"topic {topic}: {meta.error.str()}")
    parts = sorted(meta.partitions)
    firsts = _by_time(c, topic, parts, start_ms, timeout_s)
    ends = _by_time(c, topic, parts, end_ms, timeout_s)
    try:
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
                 for p in parts}
    except KafkaException as exc:
        raise KafkaFatalError(f"cannot read the end offsets of {topic}: {exc}") from None
    out: dict[int, tuple[int, int]] = {}
    for first, end in zip(firsts, ends, strict=True):
        high = marks[first.partition][1]
        lo = high if first.offset < 0 else first.offset
        hi = high if end.offset < 0 else end.offset
        if lo < hi:
            out[first.partition] = (lo, hi)
    return out


def _by_time(
    c: Consumer, topic: str, parts: list[int], ms: int, timeout_s: float
) -> list[TopicPartition]:
    """``offsets_for_times`` for every partition. A partition's lookup can fail on its
    own (a leader moving, a busy broker): its offset would read as -1, "nothing that
    recent", and the range would silently lose it. So errors are retried, then fatal."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = c.offsets_for_times([TopicPartition(topic, p, ms) for p in parts],
                                        timeout=timeout_s)
        except KafkaException as exc:
            why = str(exc)
        else:
            failed = [(tp.partition, tp.error) for tp in found if tp.error is not None]
            if not failed:
                return list(found)
            why = f"partition {failed[0][0]}: {failed[0][1]}"
        if time.monotonic() > deadline:
            raise KafkaFatalError(f"cannot look up offsets of {topic} by time ({why})")
        time.sleep(0.5)


def _consume(
    c: Consumer,
    topic: str,
    bounds: dict[int, tuple[int, int]],
    start_ms: int,
    end_ms: int,
    timeout_s: float,
) -> list[RangeRecord]:
    if not bounds:
        return []
    c.assign([TopicPartition(topic, p, lo) for p, (lo, _) in bounds.items()])
    left = {p: hi for p, (_, hi) in bounds.items()}
    out: list[RangeRecord] = []
    deadline = time.monotonic() + timeout_s
    while left:
        if time.monotonic() > deadline:
            raise KafkaFatalError(f"reading {topic} took longer than {timeout_s:.0f}s "
                                  f"({len(out)} records read)")
        for m in c.consume(10_000, 0.5):
            p, offset, err = m.partition() or 0, m.offset() or 0, m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    left.pop(p, None)  # nothing more (gaps: compaction, transaction markers)
                elif err.fatal():
                    raise KafkaFatalError(f"reading {topic}: {err.str()}")
                continue
            hi = left.get(p)
            if hi is None or offset >= hi:
                continue
            ts = m.timestamp()[1]
            if start_ms <= ts < end_ms:
                out.append(RangeRecord(p, offset, ts, m.key(), m.value()))
            if offset >= hi - 1:
                left.pop(p)
                c.pause([TopicPartition(topic, p)])
    return out
