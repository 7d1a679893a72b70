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
        #: Fields holding records (dotted paths): their fields become ``outer.inner`` keys;
        #: a map's dict stays one value (a multiclass prediction's score is one).
        self._records = _record_paths(tree, _named([tree, *referenced]))
        self._nested = bool(self._records)
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
            record = _flatten_records(record, self._records)
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


def _named(trees: list[Any]) -> dict[str, dict[str, Any]]:
    """Every named record of the schemas, by name and by namespace.name."""
    named: dict[str, dict[str, Any]] = {}
    for node in _walk(trees):
        if node.get("type") == "record" and isinstance(node.get("name"), str):
            name = node["name"]
            named[name.rsplit(".", 1)[-1]] = named[name] = node
            if node.get("namespace"):
                named[f"{node['namespace']}.{name}"] = node
    return named


def _record_paths(node: dict[str, Any], named: dict[str, dict[str, Any]], prefix: str = "",
                  seen: frozenset[int] = frozenset()) -> set[str]:
    """The dotted paths of the fields of ``node`` (a record) that hold a record."""
    paths: set[str] = set()
    for f in node.get("fields", ()):
        kind = f.get("type")
        for branch in kind if isinstance(kind, list) else [kind]:
            t = named.get(branch) if isinstance(branch, str) else branch
            if isinstance(t, dict) and t.get("type") == "record" and id(t) not in seen:
                path = prefix + f["name"]
                paths.add(path)
                paths |= _record_paths(t, named, path + ".", seen | {id(node)})
    return paths


def _flatten_records(record: dict[str, Any], paths: set[str],
                     prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = prefix + key
        if name in paths and type(value) is dict:
            out.update(_flatten_records(value, paths, name + "."))
        else:
            out[name] = value
    return out


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
