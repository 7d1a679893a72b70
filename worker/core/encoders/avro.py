"""Predictions as Avro records in the Confluent wire format (``--output-format avro``): a
magic byte 0, the 4-byte big-endian schema id the registry gave schemas/prediction.avsc,
then the record in Avro's binary encoding. Java, ksqlDB and Flink consumers read them with
their usual deserializers; the monitor reads them with the avro decoder.

The record is written by hand for the one schema it serves (``SCHEMA``, checked at
construction against the file's field list): a generic writer spends most of its time
choosing union branches. ``fastavro`` reads the result back in the tests.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Final

import orjson

from worker.core.records import PredictionRecord

#: The Avro twin of schemas/prediction.schema.json. The file lives in the package (a wheel
#: has no schemas/ folder); schemas/prediction.avsc is a link to it.
SCHEMA_PATH: Final = Path(__file__).with_name("prediction.avsc")
SCHEMA: Final = SCHEMA_PATH.read_text()
FIELDS: Final = ("id", "score", "label", "model", "model_version", "event_ts", "scored_at",
                 "source", "true_label", "segments", "reasons")
#: The symbols of the ReasonOutput enum, in the schema's order.
_OUTPUTS: Final = {"log_odds": b"\x00", "probability": b"\x02", "raw": b"\x04"}
_DOUBLE: Final = struct.Struct("<d").pack


def _long(n: int) -> bytes:
    """Avro's zig-zag varint."""
    return _unsigned((n << 1) ^ (n >> 63))


def _string(s: str) -> bytes:
    b = s.encode()
    return _long(len(b)) + b


def _label(value: Any, nullable: bool) -> bytes:
    """A union of [null?,] long, double, string: the branch index, then the value."""
    base = 1 if nullable else 0
    if value is None and nullable:
        return b"\x00"
    kind = type(value)
    if kind is int:
        return _long(base) + _long(value)
    if kind is float:
        return _long(base + 1) + _DOUBLE(value)
    if kind is str:
        return _long(base + 2) + _string(value)
    raise ValueError(f"a label must be an integer, a number or a string, not {kind.__name__}")


def _segments(value: dict[str, str] | None) -> bytes:
    """A nullable map of strings: one block of entries, then the end block."""
    if not value:
        return b"\x00"
    body = b"".join(_string(k) + _string(v) for k, v in value.items())
    return b"\x02" + _long(len(value)) + body + b"\x00"


def _any(value: Any) -> bytes:
    """A reason's value: a union of null, boolean, long, double, string."""
    if value is None:
        return b"\x00"
    kind = type(value)
    if kind is bool:
        return b"\x02" + (b"\x01" if value else b"\x00")
    if kind is int:
        return b"\x04" + _long(value)
    if kind is float:
        return b"\x06" + _DOUBLE(value)
    return b"\x08" + _string(str(value))


def _reasons(value: dict[str, Any] | None) -> bytes:
    if value is None:
        return b"\x00"
    top = value["top"]
    body = b"".join(_string(r["feature"]) + _any(r["value"]) + _DOUBLE(float(r["contribution"]))
                    for r in top)
    items = _long(len(top)) + body + b"\x00" if top else b"\x00"
    return (b"\x02" + _DOUBLE(float(value["baseline"])) + _OUTPUTS[value["output"]] + items)


def _score(value: Any) -> bytes:
    if type(value) is float:
        return b"\x00" + _DOUBLE(value)
    if isinstance(value, dict):  # multiclass: one block of entries, then the end block
        body = b"".join(_string(str(k)) + _DOUBLE(float(v)) for k, v in value.items())
        return b"\x02" + _long(len(value)) + body + b"\x00"
    return b"\x00" + _DOUBLE(float(value))


class AvroEncoder:
    """Prediction records -> wire-format values with ``schema_id`` (the registry's).

    A batch's predictions share their model, version and scoring time, so their bytes are
    kept from one record to the next (the hot path: each microsecond here is about 2 % of
    the worker's rate)."""

    def __init__(self, schema_id: int) -> None:
        if not 0 <= schema_id < 2**32:
            raise ValueError(f"schema id {schema_id} does not fit the wire format's 4 bytes")
        names = tuple(f["name"] for f in orjson.loads(SCHEMA)["fields"])
        if names != FIELDS:  # the writer below follows the schema's order, field by field
            raise ValueError(f"{SCHEMA_PATH.name} has fields {names}, the writer {FIELDS}")
        self.schema_id = schema_id
        self._header = b"\x00" + schema_id.to_bytes(4, "big")
        self._model: tuple[str, str, bytes] = ("", "", b"")
        self._scored: tuple[int, bytes] = (-1, b"")
        self._high: tuple[int, bytes] = (0, b"")

    def __call__(self, p: PredictionRecord) -> bytes:
        ident = p["id"].encode()
        score, label, event_ts = p["score"], p["label"], p.get("event_ts")
        model, version = p["model"], p["model_version"]
        cached = self._model
        if cached[0] != model or cached[1] != version:
            cached = self._model = (model, version, _string(model) + _string(version))
        scored_at = p["scored_at"]
        if self._scored[0] != scored_at:
            self._scored = (scored_at, _long(scored_at))
        true_label, source = p.get("true_label"), p.get("source")
        size = len(ident)
        return b"".join((
            self._header, _ONE[size << 1] if size < 64 else _long(size), ident,
            b"\x00" + _DOUBLE(score) if type(score) is float else _score(score),
            _SMALL_LABELS[label] if type(label) is int and -64 <= label < 64
            else _label(label, False),
            cached[2], b"\x00" if event_ts is None else b"\x02" + self._time(event_ts),
            self._scored[1], b"\x00" if source is None else b"\x02" + _string(source["topic"])
            + _long(source["partition"]) + _long(source["offset"]),
            b"\x00" if true_label is None else _label(true_label, True),
            _segments(p.get("segments")), _reasons(p.get("reasons"))))


    def _time(self, ms: int) -> bytes:
        """``_long(ms)`` for epoch milliseconds: their varint's bytes past the 4th (bits 28
        and up, about 3 days) are those of the previous event's, nearly always."""
        z = (ms << 1) ^ (ms >> 63)
        high = z >> 28
        if not high:
            return _long(ms)
        if high != self._high[0]:
            self._high = (high, _unsigned(high))
        return _PAIRS[z & 0x3FFF] + _PAIRS[(z >> 14) & 0x3FFF] + self._high[1]


def _unsigned(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: One byte each; and every 14-bit value as two varint bytes that both continue (557 KiB).
_ONE: Final = [bytes((v,)) for v in range(128)]
_PAIRS: Final = [bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(1 << 14)]
#: A small integer label's union branch (long) and value, precomputed.
_SMALL_LABELS: Final = {n: b"\x00" + _long(n) for n in range(-64, 64)}
