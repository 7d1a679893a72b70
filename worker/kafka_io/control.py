"""The model-control topic: a plain consumer that reads it from the beginning.

No group commits: every worker reads the whole compacted topic at start, so a
restarted worker sees the latest record per model and converges on it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Producer

from worker.delivery_terms import Headers
from worker.errors import KafkaFatalError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ControlRecord:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class ControlSource(Protocol):
    """What the reloaders read instructions from (ControlReader; a list in tests)."""

    def poll(self, timeout_s: float) -> list[ControlRecord]: ...
    def close(self) -> None: ...


class ControlReader:
    """Reads a control topic from its start; the group id is throwaway (nothing committed)."""

    def __init__(self, conf: Mapping[str, Any], topic: str) -> None:
        """``conf``: ``client_config(Role.CONTROL, ...)``; the group id is made here."""
        self._c = Consumer({**conf, "group.id": f"model-control-{uuid.uuid4().hex}"})
        self._c.subscribe([topic])

    def poll(self, timeout_s: float) -> list[ControlRecord]:
        out: list[ControlRecord] = []
        for m in self._c.consume(500, timeout_s):
            err = m.error()
            if err is None:
                out.append(ControlRecord(m.key(), m.value(), m.timestamp()[1]))
            elif err.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                log.warning("model control consumer: %s", err.str())
        return out

    def close(self) -> None:
        self._c.close()


def read_control(conf: Mapping[str, Any], topic: str, timeout_s: float = 30.0
                 ) -> list[ControlRecord]:
    """Every record of the control topic, up to its end now (a missing topic: none)."""
    c = Consumer({**conf, "group.id": f"model-control-{uuid.uuid4().hex}",
                  "enable.partition.eof": True})
    try:
        metadata = c.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        pending = set(metadata.partitions)
        c.subscribe([topic])
        out: list[ControlRecord] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in c.consume(500, 0.5):
                err = m.error()
                if err is None:
                    out.append(ControlRecord(m.key(), m.value(), m.timestamp()[1]))
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
        if pending:
            raise KafkaFatalError(f"could not read control topic {topic} to its end "
                                  f"within {timeout_s:.0f}s")
        return out
    finally:
        c.close()


def publish_control(conf: Mapping[str, Any], topic: str, key: bytes, value: bytes,
                    timeout_s: float = 30.0) -> None:
    """Produce one control record and wait for the broker to acknowledge it."""
    publish(conf, [(topic, key, value)], timeout_s)


def publish(conf: Mapping[str, Any], messages: list[tuple[str, bytes, bytes]],
            timeout_s: float, headers: Headers | None = None) -> None:
    """Send (topic, key, value) messages, each with ``headers``, and wait until the broker
    has every one (commands: a few records that must not be lost); KafkaFatalError when it
    will not take them."""
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err.str())

    p = Producer(dict(conf))
    for topic, key, value in messages:
        if headers:
            p.produce(topic, value, key, on_delivery=delivered, headers=headers)
        else:
            p.produce(topic, value, key, on_delivery=delivered)
    left = p.flush(timeout_s)
    if errors or left:
        reason = errors[0] if errors else f"not acknowledged within {timeout_s:.0f}s"
        raise KafkaFatalError(f"{len(errors) or left} record(s) to {messages[0][0]} not "
                              f"delivered: {reason}")
