"""The terms of delivering an output, one definition each for every layer: the settings,
the Kafka edge (worker/kafka_io/producer.py) and the sink seam (worker/stream/sinks/).

Pure: no Kafka, no I/O. A send names its record by a tag (the loop's position of the
record in its batch) and hears one verdict, with that tag, through an ``OnDelivery``; a
transactional commit answers with a ``TxState``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Final, Protocol

from worker.errors import SendError


class Guarantee(StrEnum):
    """The worker's delivery guarantee; the values are the ``--guarantee`` choices."""

    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


#: A record's headers, as confluent_kafka takes them.
Headers = list[tuple[str, str | bytes | None]]
#: What a refusal reports of its record: (topic, value, key), for logs.
Sent = tuple[str, bytes | None, bytes | None]
#: A record's verdict with the tag its send gave: ``(tag, None, None)`` once delivered for
#: good, else ``(tag, why, what)``. One callable serves many records (a batch's), so a send
#: costs no callable of its own on the caller's side; the tag says which record it was.
OnDelivery = Callable[[int, SendError | None, Sent | None], None]


class OutRecord(Protocol):
    """What a batch send reads of each record (the loop's ``Output`` is one)."""

    @property
    def topic(self) -> str: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers | None: ...


class TxState(StrEnum):
    """What ``commit`` of a transactional sink or producer answers."""

    COMMITTED = "committed"
    #: Not finished within the timeout (the destination is slow or away): call commit again.
    PENDING = "pending"
    #: The transaction failed: call ``abort`` until it returns True (then read again).
    ABORT = "abort"


#: librdkafka's default ``message.max.bytes``: the producer's record limit unless set.
PRODUCER_MAX_BYTES: Final = 1_000_000
#: The default ``max_event_bytes`` (960 KiB): 16 KiB below PRODUCER_MAX_BYTES are left
#: for a dead letter's key and headers.
MAX_EVENT_BYTES_DEFAULT: Final = 983_040
