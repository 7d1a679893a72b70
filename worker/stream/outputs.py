"""What the loop publishes: one ``Output`` per prediction, dead letter, shadow prediction
or alert, each within the record size limit, and the fallback dead letter of an output
the broker refused for good.

A record whose output cannot be produced (too large for the producer or the topic, or
refused for another permanent reason) becomes a dead letter that fits: the original
bytes when they fit, else a prefix, with the full length and SHA-256 in headers
(kind ``too_large`` or ``undeliverable``, schemas/dead_letter.schema.json).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

from worker.core.pipeline import Outcome, Prediction
from worker.delivery_terms import Headers
from worker.errors import ConfigError, Rejection, RejectKind, SendError, SendFailure
from worker.kafka_io import Message
from worker.model.bundle import ModelBundle

#: Room for a dead letter's key and headers above ``max_event_bytes`` (start-up check).
DEAD_LETTER_HEADROOM: Final = 16 * 1024
#: Record batch framing the broker counts against ``max.message.bytes``, with margin.
RECORD_OVERHEAD: Final = 512
#: ``dlq.error.message`` is cut to this many characters.
MESSAGE_CHARS: Final = 1000
#: Headers a fallback dead letter adds (their names and values), with margin.
_FALLBACK_HEADERS: Final = 400


class Kind(StrEnum):
    PREDICTION = "prediction"
    DEAD_LETTER = "dead letter"
    SHADOW = "shadow prediction"
    ALERT = "alert"
    #: Feature statistics of the events scored (worker/core/feature_stats.py).
    STATS = "feature statistics"
    #: A too_large or undeliverable dead letter: if even that fails, it is dropped.
    FALLBACK = "fallback dead letter"
    #: A dead letter no output can carry (keyless, for a compacted dead-letter topic): not
    #: sent, only counted and logged; its offset is committed like any other.
    DROPPED = "dropped"


class Output(NamedTuple):
    """One record to produce. A NamedTuple: a batch makes one per event, and it costs a
    third of a frozen slotted dataclass (bench numbers in the commit that made it)."""

    kind: Kind
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers | None
    #: The index of the input it answers within its batch (-1: none, an alert).
    source: int


@dataclass(frozen=True, slots=True)
class RecordLimit:
    """The largest record every output topic and the producer accept, and who says so."""

    bytes: int
    source: str

    def fits(self, size: int) -> bool:
        return size <= self.room

    @property
    def room(self) -> int:
        """The largest key, value and headers a record may carry together."""
        return self.bytes - RECORD_OVERHEAD


class Passed(NamedTuple):
    """An input's headers that go on the outputs answering it (``pass_headers``), and their
    ``headers_size``."""

    headers: Headers
    size: int


@dataclass(slots=True)
class PassedHeaders:
    """What each input of a batch passes on, by its index in the batch, put on its outputs
    as they are built (a second pass that rebuilt every output cost twice as much in
    process; docs/running/tracing.md)."""

    by_input: Sequence[Passed]
    #: The largest key, value and headers a record may carry together (``RecordLimit.room``).
    room: int
    #: Outputs sent without their input's headers: with them they would not fit.
    went_without: int = 0

    def within(self, index: int, size: int) -> Headers | None:
        """Input ``index``'s headers for an output of ``size`` bytes (key, value and its
        own headers), or None: it has none, or the record would not fit with them."""
        headers, extra = self.by_input[index]
        if not headers:
            return None
        if size + extra <= self.room:
            return headers
        self.went_without += 1
        return None


@dataclass(frozen=True, slots=True)
class Rejecter:
    """Who rejects (stamped on every dead letter), and what the outputs accept."""

    bundle: ModelBundle
    worker_id: str
    limit: RecordLimit
    #: Output topics that are compacted: they refuse every record without a key.
    compacted: frozenset[str] = frozenset()


def where(m: Message | None) -> str:
    """An input's coordinates, for logs: topic[partition]@offset."""
    return "-" if m is None else f"{m.topic()}[{m.partition()}]@{m.offset()}"


def dead_letter_headers(
    m: Message, r: Rejection, bundle: ModelBundle, worker_id: str, now_ms: int
) -> Headers:
    """Headers of a dead letter (schemas/dead_letter.schema.json)."""
    return [
        ("dlq.error.kind", r.kind.value),
        ("dlq.error.message", r.message[:MESSAGE_CHARS]),
        ("dlq.source.topic", m.topic() or ""),
        ("dlq.source.partition", str(m.partition())),
        ("dlq.source.offset", str(m.offset())),
        ("dlq.model.name", bundle.manifest.name),
        ("dlq.model.version", bundle.manifest.version),
        ("dlq.worker.id", worker_id),
        ("dlq.failed_at", str(now_ms)),
    ]


def headers_size(headers: Headers | None) -> int:
    total = 0
    for name, value in headers or ():
        if type(value) is not bytes:  # a consumed header's value is bytes (or None)
            value = value.encode() if isinstance(value, str) else value or b""
        total += len(name) + len(value) + 8
    return total


def batch_outputs(msgs: Sequence[Message], outcomes: Sequence[Outcome], output_topic: str,
                  dlq_topic: str, rejecter: Rejecter, now_ms: int,
                  passed: PassedHeaders | None = None) -> list[Output]:
    """A prediction per valid event, a dead letter per invalid one, in input order, each
    with the headers its input passes on (``passed``) when they fit. An output the topic
    would refuse (larger than the limit; keyless, for a compacted topic) becomes a fitted
    dead letter right away."""
    fits, compacted = rejecter.limit.fits, rejecter.compacted
    room = rejecter.limit.room  # fits(), inline for the one check every prediction takes
    out: list[Output] = []
    append, new = out.append, tuple.__new__  # new(Output, ...): 40 % cheaper than Output(...)
    prediction, dead_letter = Kind.PREDICTION, Kind.DEAD_LETTER
    for i, (m, o) in enumerate(zip(msgs, outcomes, strict=True)):
        key = m.key()
        if type(o) is Prediction:
            payload = o.payload
            if key is None and output_topic in compacted:
                append(carrying(dropped_if_keyless(fallback(
                    m, i, output_topic, KEYLESS, dlq_topic, rejecter, now_ms), rejecter),
                    passed))
                continue
            size = len(payload) + len(key or b"")
            if size <= room:
                append(new(Output, (prediction, output_topic, payload, key,
                                    None if passed is None else passed.within(i, size), i)))
                continue
            why, refused = f"its prediction of {len(payload)} bytes", output_topic
        else:
            assert isinstance(o, Rejection)
            value = m.value()
            headers = dead_letter_headers(m, o, rejecter.bundle, rejecter.worker_id, now_ms)
            if fits(len(value or b"") + len(key or b"") + headers_size(headers)):
                append(carrying(dropped_if_keyless(
                    Output(dead_letter, dlq_topic, value, key, headers, i), rejecter), passed))
                continue
            why, refused = f"its dead letter ({o.kind.value}: {o.message})", dlq_topic
        error = SendError(SendFailure.TOO_LARGE, f"{why} exceeds the {rejecter.limit.bytes}-"
                          f"byte record limit ({rejecter.limit.source})")
        append(carrying(dropped_if_keyless(
            fallback(m, i, refused, error, dlq_topic, rejecter, now_ms), rejecter), passed))
    return out


KEYLESS: Final = SendError(SendFailure.REJECTED, "the topic is compacted and the record has "
                           "no key (a compacted topic refuses records without a key)")


def dropped_if_keyless(out: Output, rejecter: Rejecter) -> Output:
    """A dead letter as it goes out: DROPPED when its topic would refuse it for good."""
    if out.key is None and out.topic in rejecter.compacted:
        return out._replace(kind=Kind.DROPPED)
    return out


def carrying(out: Output, passed: PassedHeaders | None) -> Output:
    """A dead letter with the headers its input passes on, when they fit (a dropped one is
    never sent)."""
    if passed is None or out.kind is Kind.DROPPED:
        return out
    size = len(out.value or b"") + len(out.key or b"") + headers_size(out.headers)
    extra = passed.within(out.source, size)
    return out if extra is None else out._replace(headers=[*(out.headers or ()), *extra])


def shadow_outputs(msgs: Sequence[Message], outcomes: Sequence[Outcome], topic: str,
                   passed: PassedHeaders | None = None) -> list[Output]:
    """A second opinion only: its rejections are no dead letters (the main model's are)."""
    shadow, new = Kind.SHADOW, tuple.__new__  # see batch_outputs
    if passed is None:
        return [new(Output, (shadow, topic, o.payload, m.key(), None, i))
                for i, (m, o) in enumerate(zip(msgs, outcomes, strict=True))
                if type(o) is Prediction]
    out: list[Output] = []
    for i, (m, o) in enumerate(zip(msgs, outcomes, strict=True)):
        if type(o) is Prediction:
            key = m.key()
            size = len(o.payload) + len(key or b"")
            out.append(new(Output, (shadow, topic, o.payload, key, passed.within(i, size), i)))
    return out


def fallback(m: Message, index: int, refused_topic: str, error: SendError, dlq_topic: str,
             rejecter: Rejecter, now_ms: int,
             refused_by_broker: bool = False) -> Output:
    """The dead letter of input ``m`` (``index`` in its batch) whose output to
    ``refused_topic`` cannot be produced, fitted to the limit (``refused_by_broker``:
    the broker refused what the limit said fits, so the dead letter aims well below)."""
    reason = Rejection(fallback_kind(error),
                       f"output to {refused_topic} cannot be produced: {error.reason}")
    headers = dead_letter_headers(m, reason, rejecter.bundle, rejecter.worker_id, now_ms)
    headers.append(("dlq.output.topic", refused_topic))
    limit = rejecter.limit.bytes
    if refused_by_broker and error.failure is SendFailure.TOO_LARGE:
        limit = min(limit, DEAD_LETTER_HEADROOM)  # a topic's limit was lowered since start
    budget = limit - RECORD_OVERHEAD - headers_size(headers) - _FALLBACK_HEADERS
    key, key_headers = _cut(m.key(), budget // 4, "dlq.original.key")
    value, value_headers = _cut(m.value(), budget - len(key or b""), "dlq.original")
    if not value_headers:  # whole: still say how long and what it hashes to
        value_headers = _facts(m.value(), "dlq.original", truncated=False)
    headers += value_headers + key_headers
    return Output(Kind.FALLBACK, dlq_topic, value, key, headers, index)


def fallback_kind(error: SendError) -> RejectKind:
    if error.failure is SendFailure.TOO_LARGE:
        return RejectKind.TOO_LARGE
    return RejectKind.UNDELIVERABLE


def _cut(data: bytes | None, budget: int, prefix: str) -> tuple[bytes | None, Headers]:
    if data is None or len(data) <= budget:
        return data, []
    return data[: max(0, budget)], _facts(data, prefix, truncated=True)


def _facts(data: bytes | None, prefix: str, truncated: bool) -> Headers:
    data = data or b""
    return [(f"{prefix}.length", str(len(data))),
            (f"{prefix}.sha256", hashlib.sha256(data).hexdigest()),
            (f"{prefix}.truncated", "true" if truncated else "false")]


def record_limit(producer_max: int, topics: dict[str, int | None],
                 max_event_bytes: int) -> RecordLimit:
    """The largest record every output accepts; a ConfigError when the largest dead letter
    (an event of ``max_event_bytes`` with its key and headers) would not fit."""
    limit = RecordLimit(producer_max, f"the producer's message.max.bytes {producer_max}")
    for topic, size in topics.items():
        if size is not None and size < limit.bytes:
            limit = RecordLimit(size, f"topic {topic}'s max.message.bytes {size}")
    if max_event_bytes + DEAD_LETTER_HEADROOM > limit.bytes:
        raise ConfigError(
            f"max_event_bytes {max_event_bytes} does not fit the outputs: {limit.source} "
            f"leaves room for events up to {limit.bytes - DEAD_LETTER_HEADROOM} bytes "
            f"(16 KiB go to a dead letter's key and headers); lower --max-event-bytes or "
            "raise the limit (--kafka message.max.bytes=..., the topics' max.message.bytes)")
    return limit
