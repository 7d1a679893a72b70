"""Avro records in the Confluent wire format (``--input-format avro``), read with fastavro.

What the model sees of each Avro type: numbers and booleans as they are; enums as their
symbol (a string); a nullable union's null as a missing value; nested records as
``outer.inner`` keys; logical types as the number they stand for: ``decimal`` as a float,
``timestamp-millis`` as epoch milliseconds (the worker's event time), ``timestamp-micros``
as epoch microseconds, ``date`` as days since 1970-01-01, ``uuid`` as its string.
fastavro is part of ``scoring-worker[registry]``; this module is imported only when a
worker reads a wire format.
"""

from __future__ import annotations

import io
import struct
from decimal import Decimal
from typing import Any, Final

import fastavro
import orjson

from worker.core.decoders import register
from worker.core.decoders.avro_flat import compile_flat
from worker.core.decoders.wire import (
    Reader,
    SchemaType,
    WireDecoder,
    WriterSchema,
    flatten,
    register_format,
)
from worker.errors import Rejection, RejectKind

#: Logical types read as their underlying value: the number (or string) itself.
AS_UNDERLYING: Final = frozenset({"timestamp-millis", "timestamp-micros", "date",
                                  "time-millis", "time-micros", "local-timestamp-millis",
                                  "local-timestamp-micros", "uuid"})


class AvroReader:
    schema_type: Final = SchemaType.AVRO

    def __init__(self, schema: WriterSchema) -> None:
        tree = orjson.loads(schema.text)
        named: dict[str, Any] = {}  # the referenced schemas' named types (other subjects)
        referenced = [orjson.loads(text) for text in schema.references]
        for ref in referenced:
            fastavro.parse_schema(_plain(ref), named_schemas=named)
        self._nested = _has_nested(tree) or any(_has_nested([tree, r]) for r in referenced)
        self._decimals = any(_has_decimal(t) for t in (tree, *referenced))
        self._parsed = fastavro.parse_schema(_plain(tree), named_schemas=named)
        if not isinstance(self._parsed, dict) or self._parsed.get("type") != "record":
            raise ValueError("the top-level type must be a record")
        self._id = schema.id
        self._flat = compile_flat(tree)  # None: fastavro reads it

    def read(self, payload: bytes) -> dict[str, Any] | Rejection:
        if self._flat is not None:
            try:
                flat, end = self._flat(payload)
            except (IndexError, ValueError, struct.error) as exc:  # UnicodeDecodeError too
                return self._mismatch(f"{type(exc).__name__} {exc}")
            if end != len(payload):
                return self._mismatch(f"{len(payload) - end} bytes after the record")
            return flat
        fo = io.BytesIO(payload)
        try:
            read = fastavro.schemaless_reader(fo, self._parsed, None)
        except Exception as exc:  # whatever the bytes make the reader trip over
            return self._mismatch(f"{type(exc).__name__} {exc}")
        if fo.tell() != len(payload):
            return self._mismatch(f"{len(payload) - fo.tell()} bytes after the record")
        assert type(read) is dict
        record: dict[str, Any] = read
        if self._decimals:
            record = _floats(record)
        if self._nested:
            record = flatten(record)
        return record

    def _mismatch(self, what: str) -> Rejection:
        return Rejection(RejectKind.DECODE,
                         f"Avro payload does not match schema id {self._id}: {what}"[:300])


def _plain(node: Any) -> Any:
    """The schema without the logical types read as their underlying value."""
    if isinstance(node, dict):
        out = {k: _plain(v) for k, v in node.items()}
        if out.get("logicalType") in AS_UNDERLYING:
            del out["logicalType"]
        return out
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            found += _walk(v)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v)
    return found


def _has_nested(tree: Any) -> bool:
    """Whether a record holds a record (its fields then become dotted keys)."""
    return sum(1 for n in _walk(tree) if n.get("type") == "record") > 1


def _has_decimal(tree: Any) -> bool:
    return any(n.get("logicalType") == "decimal" for n in _walk(tree))


def _floats(record: dict[str, Any]) -> dict[str, Any]:
    """Decimals as floats, at any depth: features are float64 numbers."""
    return {k: (float(v) if type(v) is Decimal else _floats(v) if type(v) is dict else v)
            for k, v in record.items()}


def _reader(schema: WriterSchema) -> Reader:
    return AvroReader(schema)


register_format(SchemaType.AVRO, _reader)
register("avro", lambda: WireDecoder(frozenset({SchemaType.AVRO})))
