"""What an output carries of the input it answers: its headers (``pass_headers``) and its
coordinates (``lineage``).

Trace context (``traceparent``, ``tracestate``) and correlation ids travel in Kafka
headers; a service downstream of the predictions or the dead letters follows a payment
only if they are carried over. Each runs only when its setting is on, so a worker without
them writes the same bytes as before they existed: the headers an input passes are picked
once per input (``HeaderPassthrough.picked``) and put on its outputs as
worker/stream/outputs.py builds them; the coordinates are spliced into the predictions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final

import orjson

from worker.core.encoders import Encoder
from worker.core.encoders.json import encode as encode_json
from worker.core.pipeline import Outcome, Prediction
from worker.delivery_terms import Headers
from worker.kafka_io import Message
from worker.stream.outputs import Passed, PassedHeaders, RecordLimit, headers_size

#: What a consumed message's ``headers()`` gives (confluent-kafka's type).
InputHeaders = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None
#: One line a minute about records whose passed headers were dropped, never one per record.
DROPPED_SUMMARY_S: Final = 60.0
_NAME: Final = itemgetter(0)
_new: Final = tuple.__new__  # Passed(...) costs several times as much, once per input


class HeaderFilter:
    """Which input headers pass: names or shell patterns (``x-b3-*``), matched without
    regard to case (HTTP header names, which tracing libraries copy into Kafka, are
    case-insensitive). A name's verdict is cached: a topic carries few distinct names."""

    def __init__(self, patterns: Sequence[str]) -> None:
        wanted = [p.strip().lower() for p in patterns if p.strip()]
        self._names = frozenset(p for p in wanted if not any(c in p for c in "*?["))
        self._globs = tuple(p for p in wanted if p not in self._names)
        self._verdict: dict[str, bool] = {}
        #: The names seen that pass (as written): an input whose names all are here passes
        #: whole, as its own list.
        self._passing: set[str] = set()

    @classmethod
    def parse(cls, text: str) -> HeaderFilter:
        """From the ``pass_header_names`` setting: names or patterns separated by commas."""
        return cls(text.split(","))

    def passes(self, name: str) -> bool:
        verdict = self._verdict.get(name)
        if verdict is None:
            low = name.lower()
            verdict = low in self._names or any(fnmatch.fnmatchcase(low, g)
                                                for g in self._globs)
            if len(self._verdict) < 4096:  # bounded: names come from producers
                self._verdict[name] = verdict
                if verdict:
                    self._passing.add(name)
        return verdict

    def pick_sized(self, headers: InputHeaders) -> Passed:
        """``pick`` and the picked headers' ``headers_size``, in one pass over the usual
        input (a list whose every name passes, bytes values): its own list."""
        if type(headers) is list:
            passing, size = self._passing, 8 * len(headers)
            for name, value in headers:
                if name not in passing or type(value) is not bytes:  # None: sized below
                    break
                size += len(name) + len(value)
            else:
                return _new(Passed, (headers, size))
        picked = self.pick(headers)
        return _new(Passed, (picked, headers_size(picked)))

    def pick(self, headers: InputHeaders) -> Headers:
        """The headers of an input that pass, in their order (repeated names kept). A
        consumed message has a list; the client's type allows a dict too."""
        if not headers:
            return []
        if type(headers) is list and self._passing.issuperset(map(_NAME, headers)):
            # Every name passes (the usual input): its own list, not a copy. The client
            # builds it once per message and only reads it to produce; nobody changes it.
            return headers
        pairs = headers.items() if isinstance(headers, dict) else headers
        known = self._verdict.get  # the common case, without a call of passes() per header
        return [(k, v) for k, v in pairs if known(k) or (known(k) is None and self.passes(k))]


@dataclass
class HeaderPassthrough:
    """Picks the allowed headers of each input of a batch for the outputs that answer it
    (worker/stream/outputs.py puts them on, unless that would push the record past the
    outputs' size limit: the record then goes without them, its prediction or dead letter
    never given up for a header), and counts the records that went without."""

    allowed: HeaderFilter
    limit: RecordLimit
    #: Records sent without their passed headers since the last summary line.
    dropped_since: int = 0
    last_summary: float = field(default=0.0)

    def picked(self, msgs: Sequence[Message]) -> PassedHeaders:
        """The headers each input passes on, for ``batch_outputs`` and ``shadow_outputs``
        to put on its outputs as they build them."""
        pick = self.allowed.pick_sized
        return PassedHeaders([pick(m.headers()) for m in msgs], self.limit.room)

    def count(self, passed: PassedHeaders) -> int:
        """Counts a batch's records that went without their headers; returns how many."""
        self.dropped_since += passed.went_without
        return passed.went_without

    def summary_due(self, now_s: float) -> int:
        """How many records went without their headers since the last line, when a
        line is due (once a minute), else 0; ``now_s`` is a monotonic clock's reading."""
        if not self.dropped_since or now_s - self.last_summary < DROPPED_SUMMARY_S:
            return 0
        n, self.dropped_since, self.last_summary = self.dropped_since, 0, now_s
        return n


def with_lineage(msgs: Sequence[Message], outcomes: Sequence[Outcome],
                 encode: Encoder = encode_json) -> list[Outcome]:
    """Each prediction with ``source``: the topic, partition and offset of the input it
    answers, so that an auditor goes from any prediction to its exact input record. The
    field is spliced into the JSON the core encoded (a JSON object ends with ``}``), which
    costs a fraction of encoding the record again. The record dicts are the batch's own
    (built by the core for this batch), so they gain the field in place."""
    out: list[Outcome] = []
    append, topics = out.append, _TopicJson()
    for m, o in zip(msgs, outcomes, strict=True):
        if type(o) is not Prediction:
            append(o)
            continue
        topic, partition, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
        record = o.record
        record["source"] = {"topic": topic, "partition": partition, "offset": offset}
        if encode is not encode_json:  # another format (Avro): the record encoded again
            append(Prediction(record, encode(record)))
            continue
        append(Prediction(record, b'%s,"source":{"topic":%s,"partition":%d,"offset":%d}}' % (
            o.payload[:-1], topics[topic], partition, offset)))
    return out


class _TopicJson(dict[str, bytes]):
    """A topic name as JSON text, encoded once per batch and name."""

    def __missing__(self, topic: str) -> bytes:
        text = self[topic] = orjson.dumps(topic)
        return text
