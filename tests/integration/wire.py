"""Producers of the wire formats for the integration tests: confluent_kafka's own serializers
against the real registry (never the project's code), and the demo's events."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.integration.helpers import ROOT
from worker.devtools.demo import make_events

AVRO_SCHEMA = (ROOT / "schemas" / "transaction.avsc").read_text()
JSON_SCHEMA = (ROOT / "schemas" / "transaction.schema.json").read_text()
Serialize = Callable[[dict[str, Any]], bytes]


def events(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return list(make_events(np.random.default_rng(seed), n, seed * 100_000, 1_790_000_000_000)[0])


def args(bootstrap: str, t_in: str, t_out: str, t_dlq: str, group: str, model: Path,
         registry: str, *extra: str) -> list[str]:
    return ["--bootstrap", bootstrap, "--input-topic", t_in, "--output-topic", t_out,
            "--dlq-topic", t_dlq, "--group", group, "--model", str(model),
            "--schema-registry", registry, *extra]


def avro(url: str, topic: str, schema: str = AVRO_SCHEMA) -> Serialize:
    ser = AvroSerializer(SchemaRegistryClient({"url": url}), schema)
    ctx = SerializationContext(topic, MessageField.VALUE)
    return lambda record: bytes(ser(record, ctx) or b"")


def json_schema(url: str, topic: str) -> Serialize:
    ser = JSONSerializer(JSON_SCHEMA, SchemaRegistryClient({"url": url}))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return lambda record: bytes(ser(record, ctx) or b"")


_PROTO_FIELDS = (("id", "STRING"), ("ts", "INT64"), ("card_id", "STRING"), ("amount", "DOUBLE"),
                 ("hour", "INT32"), ("merchant_risk", "DOUBLE"), ("card_age_days", "DOUBLE"),
                 ("velocity_1h", "INT32"), ("distance_km", "DOUBLE"), ("foreign", "INT32"),
                 ("online", "INT32"), ("avg_amount_30d", "DOUBLE"))


def transaction_message() -> Any:
    """The demo transaction as a Protobuf message class (what protoc would generate)."""
    fd = descriptor_pb2.FileDescriptorProto(name="transaction.proto", package="demo",
                                            syntax="proto3")
    msg = fd.message_type.add(name="Transaction")
    kinds = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(_PROTO_FIELDS, start=1):
        msg.field.add(name=name, number=number, type=getattr(kinds, f"TYPE_{kind}"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("demo.Transaction"))


def protobuf(url: str, topic: str) -> Serialize:
    cls = transaction_message()
    ser = ProtobufSerializer(cls, SchemaRegistryClient({"url": url}),
                             {"use.deprecated.format": False})
    ctx = SerializationContext(topic, MessageField.VALUE)
    return lambda record: bytes(ser(cls(**record), ctx) or b"")


def keyed(records: Sequence[dict[str, Any]], serialize: Serialize) -> list[tuple[bytes, bytes]]:
    return [(r["id"].encode(), serialize(r)) for r in records]


def scores(values: Sequence[bytes | None]) -> dict[str, Any]:
    out = {}
    for v in values:
        p = orjson.loads(v or b"")
        out[p["id"]] = p["score"]
    return out


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
