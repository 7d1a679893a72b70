"""The wire-format decoders (worker/core/decoders/): Avro, Protobuf and JSON Schema payloads
after Confluent's 5-byte header, mapped onto the features; bad input as rejections.

Values are built here with fastavro and protobuf directly (no registry needed); the real
registry and confluent_kafka's own serializers are in tests/integration/test_wire_formats.py.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.unit.helpers import binary_bundle, event
from worker.core import decoders
from worker.core.decoders.wire import (
    NO_MAGIC,
    SchemaType,
    WireDecoder,
    WriterSchema,
    schema_ids,
)
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.errors import Rejection

TXN: dict[str, Any] = {"type": "record", "name": "Txn", "fields": [
    {"name": "id", "type": "string"}, {"name": "ts", "type": "long"},
    {"name": "a", "type": "double"}, {"name": "b", "type": "double"},
    {"name": "c", "type": "long"}]}
RICH: dict[str, Any] = {"type": "record", "name": "Rich", "fields": [
    {"name": "id", "type": "string"},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10,
                                "scale": 2}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["CARD", "WIRE"]}},
    {"name": "note", "type": ["null", "string"], "default": None},
    {"name": "card", "type": {"type": "record", "name": "Card", "fields": [
        {"name": "country", "type": "string"}, {"name": "age_days", "type": "int"}]}}]}


def wire(schema_id: int, payload: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


def avro(schema: dict[str, Any], record: dict[str, Any], schema_id: int = 1) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return wire(schema_id, out.getvalue())


def decoder(name: str, *schemas: WriterSchema) -> WireDecoder:
    dec = decoders.get(name)
    assert isinstance(dec, WireDecoder)
    for s in schemas:
        dec.book.learn(s)
    return dec


def avro_schema(tree: dict[str, Any], schema_id: int = 1) -> WriterSchema:
    return WriterSchema(schema_id, SchemaType.AVRO, orjson.dumps(tree).decode())


def test_avro_records_decode_to_the_events_json_would_give() -> None:
    events = [event(i) for i in range(3)]
    dec = decoder("avro", avro_schema(TXN))
    out = dec.decode([avro(TXN, e) for e in events], 1 << 20)
    assert out.events == events and out.positions == [0, 1, 2] and out.rejected == []


def test_avro_logical_types_enums_nullable_unions_and_nested_records() -> None:
    record = {"id": "x", "amount": Decimal("12.34"), "at": 1_700_000_000_123, "day": 19_700,
              "kind": "WIRE", "note": None, "card": {"country": "FR", "age_days": 40}}
    out = decoder("avro", avro_schema(RICH)).decode([avro(RICH, record)], 1 << 20)
    assert out.events == [{"id": "x", "amount": 12.34, "at": 1_700_000_000_123, "day": 19_700,
                           "kind": "WIRE", "note": None, "card.country": "FR",
                           "card.age_days": 40}]
    assert type(out.events[0]["amount"]) is float


def test_bad_wire_values_are_rejections_with_their_reason() -> None:
    dec = decoder("avro", avro_schema(TXN))
    dec.book.unknown(7)
    good = avro(TXN, event(0))
    values = [b'{"id": "json"}', good + b"\x01\x02", wire(1, b"\x02"), wire(7, good[5:]),
              b"\x00\x00", None, good]
    out = dec.decode(values, 1 << 20)
    reasons = dict(out.rejected)
    assert out.positions == [6]
    assert reasons[0] == NO_MAGIC
    assert "does not match schema id 1: 2 bytes after the record" in reasons[1].message
    assert "does not match schema id 1" in reasons[2].message
    assert reasons[3].message == "unknown schema id 7 (not in the schema registry)"
    assert "shorter than its 5-byte header" in reasons[4].message
    assert reasons[5].message == "null value (tombstone)"


def test_a_schema_of_another_type_or_one_that_does_not_parse_is_a_rejection() -> None:
    dec = decoder("avro", WriterSchema(2, SchemaType.JSON, '{"type": "object"}'),
                  WriterSchema(3, SchemaType.AVRO, '{"type": "record", "name": "X", '
                               '"fields": [{"name": "a", "type": "nope"}]}'))
    out = dec.decode([wire(2, b"{}"), wire(3, b"")], 1 << 20)
    assert [r.message for _, r in out.rejected] == [
        "schema id 2 is JSON, expected AVRO",
        out.rejected[1][1].message]
    assert out.rejected[1][1].message.startswith("schema id 3 does not parse")


def test_an_id_the_shell_did_not_look_up_fails_loudly() -> None:
    # Never a dead letter: an id not looked up yet may be an outage, not bad input.
    with pytest.raises(KeyError):
        decoder("avro").decode([avro(TXN, event(0), schema_id=9)], 1 << 20)
    assert schema_ids([avro(TXN, event(0), 9), b"{}", None, b"\x00\x00\x00\x00\x02x"]) == {9, 2}


def test_auto_tells_json_from_the_wire_format_and_keeps_input_order() -> None:
    dec = decoder("auto", avro_schema(TXN))
    values = [orjson.dumps(event(0)), avro(TXN, event(1)), b"not json", avro(TXN, event(3))]
    out = dec.decode(values, 1 << 20)
    assert out.positions == [0, 1, 3]
    assert out.events == [event(0), event(1), event(3)]
    assert [i for i, _ in out.rejected] == [2]


def test_json_schema_payloads_are_validated_against_their_schema() -> None:
    schema = {"type": "object", "required": ["id", "a"],
              "properties": {"id": {"type": "string"}, "a": {"type": "number"}}}
    dec = decoder("json-schema", WriterSchema(4, SchemaType.JSON, orjson.dumps(schema).decode()))
    values = [wire(4, orjson.dumps(event(0))), wire(4, b'{"id": "x", "a": "high"}'),
              wire(4, b'{"id": "y", "a": 1, "card": {"country": "FR"}}'), wire(4, b"[1]")]
    out = dec.decode(values, 1 << 20)
    assert out.events == [event(0), {"id": "y", "a": 1, "card.country": "FR"}]
    reasons = dict(out.rejected)
    assert reasons[1].message.startswith("payload does not match schema id 4:")
    assert reasons[3].message == "event must be a JSON object"


def _txn_proto() -> tuple[WriterSchema, Any]:
    import base64

    fd = descriptor_pb2.FileDescriptorProto(name="txn.proto", package="t", syntax="proto3")
    kind = fd.enum_type.add(name="Kind")
    kind.value.add(name="CARD", number=0)
    kind.value.add(name="WIRE", number=1)
    msg = fd.message_type.add(name="Txn")
    f = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="id", number=1, type=f.TYPE_STRING)
    msg.field.add(name="a", number=2, type=f.TYPE_DOUBLE)
    msg.field.add(name="kind", number=3, type=f.TYPE_ENUM, type_name=".t.Kind")
    msg.field.add(name="note", number=4, type=f.TYPE_STRING, proto3_optional=True,
                  oneof_index=0)
    msg.oneof_decl.add(name="_note")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Txn"))
    text = base64.b64encode(fd.SerializeToString()).decode()
    return WriterSchema(5, SchemaType.PROTOBUF, text), cls


def test_protobuf_messages_map_enums_defaults_and_presence() -> None:
    schema, cls = _txn_proto()
    dec = decoder("protobuf", schema)
    values = [wire(5, b"\x00" + cls(id="p", a=0.0, kind=1).SerializeToString()),
              wire(5, b"\x02\x00" + cls(id="q", a=2.5, note="n").SerializeToString()),
              wire(5, b"\x00\xff\xff")]
    out = dec.decode(values, 1 << 20)
    assert out.events == [{"id": "p", "a": 0.0, "kind": "WIRE", "note": None},
                          {"id": "q", "a": 2.5, "kind": "CARD", "note": "n"}]
    assert "Protobuf payload does not match schema id 5" in out.rejected[0][1].message


def test_the_same_events_as_json_and_as_avro_score_bit_identically(tmp_path: Path) -> None:
    bundle = binary_bundle(tmp_path / "m")
    events = [event(i, a=i * 0.37 - 4.1, b=1.0 / (i + 3)) for i in range(200)]
    as_json = score_values([orjson.dumps(e) for e in events], ScoringContext(bundle), 1)
    dec = decoder("avro", avro_schema(TXN))
    as_avro = score_values([avro(TXN, e) for e in events], ScoringContext(bundle, decoder=dec), 1)
    assert all(isinstance(o, Prediction) for o in as_json + as_avro)
    assert [o.payload for o in as_avro] == [o.payload for o in as_json]  # type: ignore[union-attr]


def test_without_the_registry_extra_the_json_worker_imports_none_of_it() -> None:
    import subprocess
    import sys

    code = ("import sys; from worker.core import decoders; decoders.get('json');"
            "import worker.stream.app, worker.stream.runner;"
            "print(sorted(m for m in ('fastavro', 'confluent_kafka.schema_registry',"
            " 'worker.core.decoders.avro') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_rejection_type_is_the_pipelines() -> None:
    out = decoder("avro").decode([b"x"], 1 << 20)
    assert isinstance(out.rejected[0][1], Rejection)


FLAT: dict[str, Any] = {"type": "record", "name": "Flat", "fields": [
    {"name": "s", "type": "string"}, {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
    {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
    {"name": "t", "type": "boolean"},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
    {"name": "n1", "type": ["null", "double"]},
    {"name": "n2", "type": ["string", "null"]}]}


def test_the_compiled_flat_reader_reads_what_fastavro_reads() -> None:
    from worker.core.decoders.avro_flat import compile_flat

    rng = np.random.default_rng(7)
    read = compile_flat(FLAT)
    assert read is not None and compile_flat(RICH) is None  # decimal, nested: fastavro's
    parsed = fastavro.parse_schema(orjson.loads(orjson.dumps(FLAT)))
    for k in range(500):
        record = {"s": "é€😀"[: k % 4] + str(k), "i": int(rng.integers(-2**31, 2**31)),
                  "l": int(rng.integers(-2**63, 2**63 - 1)), "f": float(rng.normal()),
                  "d": float(rng.normal() * 1e6), "t": bool(k % 2), "at": 1_700_000_000_000 + k,
                  "e": "ABC"[k % 3], "n1": None if k % 3 else float(k),
                  "n2": None if k % 2 else "x"}
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, record)
        payload = out.getvalue()
        expected = fastavro.schemaless_reader(io.BytesIO(payload), fastavro.parse_schema(
            orjson.loads(orjson.dumps(FLAT).replace(b'"logicalType"', b'"x"'))), None)
        assert read(payload) == (expected, len(payload))
        dec = decoder("avro", avro_schema(FLAT))
        for cut in range(len(payload)):  # every truncation is a rejection, never a record
            got = dec.decode([wire(1, payload[:cut])], 1 << 20)
            assert got.events == [] and len(got.rejected) == 1
        if k > 20:
            break


def test_malformed_flat_values_are_rejections() -> None:
    dec = decoder("avro", avro_schema(FLAT))
    bad_enum = b"\x02a\x00\x00" + b"\x00" * 12 + b"\x00\x00" + b"\x0a"
    out = dec.decode([wire(1, bad_enum), wire(1, b"\x04\xff\xfe")], 1 << 20)
    assert out.events == [] and len(out.rejected) == 2
    assert all("does not match schema id 1" in r.message for _, r in out.rejected)


def test_an_avro_schema_with_references_reads_the_referenced_named_types() -> None:
    """A named type from another subject (a schema reference): the writer's schema names
    ``demo.Place`` (a record) and ``demo.Kind`` (an enum), whose texts come with it."""
    place = {"type": "record", "name": "Place", "namespace": "demo",
             "fields": [{"name": "km", "type": "double"}, {"name": "kind", "type": "demo.Kind"}]}
    kind = {"type": "enum", "name": "Kind", "namespace": "demo", "symbols": ["A", "B"]}
    main = {"type": "record", "name": "Txn", "namespace": "demo", "fields": [
        {"name": "id", "type": "string"}, {"name": "a", "type": "double"},
        {"name": "where", "type": "demo.Place"}]}
    full = {**main, "fields": [*main["fields"][:2], {"name": "where", "type": {
        **place, "fields": [place["fields"][0], {"name": "kind", "type": kind}]}}]}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(full),
                               {"id": "x", "a": 1.5, "where": {"km": 2.0, "kind": "B"}})
    value = b"\x00\x00\x00\x00\x08" + out.getvalue()
    text = orjson.dumps(main).decode()
    refs = (orjson.dumps(kind).decode(), orjson.dumps(place).decode())
    dec = decoder("avro", WriterSchema(8, SchemaType.AVRO, text, refs))
    got = dec.decode([value], 1 << 20)
    assert got.events == [{"id": "x", "a": 1.5, "where.km": 2.0, "where.kind": "B"}]
    alone = decoder("avro", WriterSchema(8, SchemaType.AVRO, text)).decode([value], 1 << 20)
    assert "does not parse" in alone.rejected[0][1].message  # without them: a dead letter
