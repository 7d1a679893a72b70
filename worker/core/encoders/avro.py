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
                 "true_label")
_DOUBLE: Final = struct.Struct("<d").pack


def _long(n: int) -> bytes:
    """Avro's zig-zag varint."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


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


def _score(value: Any) -> bytes:
    if type(value) is float:
        return b"\x00" + _DOUBLE(value)
    if isinstance(value, dict):  # multiclass: one block of entries, then the end block
        body = b"".join(_string(str(k)) + _DOUBLE(float(v)) for k, v in value.items())
        return b"\x02" + _long(len(value)) + body + b"\x00"
    return b"\x00" + _DOUBLE(float(value))


class AvroEncoder:
    """Prediction records -> wire-format values with ``schema_id`` (the registry's)."""

    def __init__(self, schema_id: int) -> None:
        if not 0 <= schema_id < 2**32:
            raise ValueError(f"schema id {schema_id} does not fit the wire format's 4 bytes")
        names = tuple(f["name"] for f in orjson.loads(SCHEMA)["fields"])
        if names != FIELDS:  # the writer below follows the schema's order, field by field
            raise ValueError(f"{SCHEMA_PATH.name} has fields {names}, the writer {FIELDS}")
        self.schema_id = schema_id
        self._header = b"\x00" + schema_id.to_bytes(4, "big")

    def __call__(self, p: PredictionRecord) -> bytes:
        event_ts = p.get("event_ts")
        scored_at = p["scored_at"]
        return b"".join((
            self._header, _string(p["id"]), _score(p["score"]), _label(p["label"], False),
            _string(p["model"]), _string(p["model_version"]),
            b"\x00" if event_ts is None else b"\x02" + _long(event_ts),
            _long(scored_at), _label(p.get("true_label"), True)))
