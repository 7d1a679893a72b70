"""Protobuf messages in the Confluent wire format (``--input-format protobuf``).

After the schema id come the message indexes (zig-zag varints: how many, then the path
from the file's first-level messages down to nested ones; a lone 0 means the first
message), then the message. The schema is the file's descriptor (``FileDescriptorProto``,
base64), as serializers register it and as the registry returns it with
``format=serialized``; imports of Google's well-known types are resolved, imports of
other registered schemas (references) are not.

What the model sees: scalars as they are (an unset proto3 scalar is its default, as the
format defines); a field with presence (``optional``, a oneof member, a message) that is
not set as missing; enums as their name; nested messages as ``outer.inner`` keys;
``google.protobuf.Timestamp`` as epoch milliseconds.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from worker.core.decoders import register
from worker.core.decoders.wire import (
    Reader,
    SchemaType,
    WireDecoder,
    WriterSchema,
    flatten,
    register_format,
)
from worker.errors import Rejection, RejectKind

TIMESTAMP: Final = "google.protobuf.Timestamp"


def _well_known(pool: descriptor_pool.DescriptorPool, name: str) -> None:
    """Add one of Google's well-known files (google/protobuf/*.proto) to ``pool``."""
    from google.protobuf import (  # noqa: F401  (each module adds its file to the default pool)
        any_pb2,
        duration_pb2,
        empty_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )

    proto = descriptor_pb2.FileDescriptorProto()
    descriptor_pool.Default().FindFileByName(name).CopyToProto(proto)
    pool.Add(proto)


class ProtobufReader:
    schema_type: Final = SchemaType.PROTOBUF

    def __init__(self, schema: WriterSchema) -> None:
        try:
            raw = base64.b64decode(schema.text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not a serialized file descriptor (base64); a registry that "
                             "returns .proto text must be asked with format=serialized"
                             ) from None
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(raw)
        pool = descriptor_pool.DescriptorPool()
        for dep in proto.dependency:
            if not dep.startswith("google/protobuf/"):
                raise ValueError(f"imports {dep}: references to other schemas are not read")
            _well_known(pool, dep)
        self._file = pool.Add(proto)
        self._tops = [self._file.message_types_by_name[m.name] for m in proto.message_type]
        self._id = schema.id
        self._classes: dict[tuple[int, ...], tuple[type[Message], Callable[..., Any]]] = {}

    def read(self, payload: bytes) -> dict[str, Any] | Rejection:
        try:
            path, start = _indexes(payload)
            cls, to_dict = self._class(path)
            msg = cls()
            msg.ParseFromString(payload[start:])
        except (DecodeError, IndexError, ValueError) as exc:
            return Rejection(RejectKind.DECODE, f"Protobuf payload does not match schema id "
                             f"{self._id}: {exc}"[:300])
        record = to_dict(msg)
        return flatten(record) if any(type(v) is dict for v in record.values()) else record

    def _class(self, path: tuple[int, ...]) -> tuple[type[Message], Callable[..., Any]]:
        if path not in self._classes:
            desc: Descriptor = self._tops[path[0]]
            for i in path[1:]:
                desc = desc.nested_types[i]
            cls = message_factory.GetMessageClass(desc)
            self._classes[path] = (cls, _converter(desc))
        return self._classes[path]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """One zig-zag varint at ``pos``: (its value, the position after it)."""
    shift = result = 0
    while True:
        b = data[pos]  # IndexError: the payload ends inside the header
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("message index varint too long")


def _indexes(payload: bytes) -> tuple[tuple[int, ...], int]:
    count, pos = _varint(payload, 0)
    if count == 0:
        return (0,), pos
    if not 0 < count <= 32:
        raise ValueError(f"{count} message indexes")
    path = []
    for _ in range(count):
        i, pos = _varint(payload, pos)
        path.append(i)
    return tuple(path), pos


def _converter(desc: Descriptor) -> Callable[[Message], dict[str, Any]]:
    """A message of ``desc`` -> a dict, the field list worked out once."""
    plan = [(f.name, _value(f)) for f in desc.fields]

    def convert(msg: Message) -> dict[str, Any]:
        return {name: get(msg) for name, get in plan}

    return convert


def _repeated(f: FieldDescriptor) -> bool:
    # protobuf 6 has is_repeated and deprecates label; 4 and 5 have only label.
    if hasattr(f, "is_repeated"):
        return bool(f.is_repeated)
    return bool(f.label == FieldDescriptor.LABEL_REPEATED)


def _value(f: FieldDescriptor) -> Callable[[Message], Any]:
    name = f.name
    if _repeated(f):
        return lambda msg: list(getattr(msg, name))
    if f.message_type is not None:
        if f.message_type.full_name == TIMESTAMP:
            return lambda msg: (getattr(msg, name).ToMilliseconds()
                                if msg.HasField(name) else None)
        inner = _converter(f.message_type)
        return lambda msg: inner(getattr(msg, name)) if msg.HasField(name) else None
    if f.enum_type is not None:
        names = {v.number: v.name for v in f.enum_type.values}
        if f.has_presence:
            return lambda msg: names.get(getattr(msg, name)) if msg.HasField(name) else None
        return lambda msg: names.get(getattr(msg, name))
    if f.has_presence:
        return lambda msg: getattr(msg, name) if msg.HasField(name) else None
    return lambda msg: getattr(msg, name)


def _reader(schema: WriterSchema) -> Reader:
    return ProtobufReader(schema)


register_format(SchemaType.PROTOBUF, _reader)
register("protobuf", lambda: WireDecoder(frozenset({SchemaType.PROTOBUF})))
