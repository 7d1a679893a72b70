"""JSON Schema payloads in the Confluent wire format (``--input-format json-schema``).

The payload is a JSON object; it is checked against the schema its id names (compiled
once per id, by worker/core/schema.py like ``--schema``), and nested objects become
``outer.inner`` keys as the other wire formats' nested records do.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from worker.core.decoders import NOT_AN_OBJECT, register
from worker.core.decoders.json import decode_rejection
from worker.core.decoders.wire import (
    Reader,
    SchemaType,
    WireDecoder,
    WriterSchema,
    flatten,
    register_format,
)
from worker.core.schema import EventValidator
from worker.errors import Rejection, RejectKind


class JsonSchemaReader:
    schema_type: Final = SchemaType.JSON

    def __init__(self, schema: WriterSchema) -> None:
        tree = orjson.loads(schema.text)
        if not isinstance(tree, dict):
            raise ValueError("a JSON Schema must be an object")
        self._id = schema.id
        self._validator = EventValidator(tree, source=f"registry schema id {schema.id}")

    def read(self, payload: bytes) -> dict[str, Any] | Rejection:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return decode_rejection(exc)
        if type(event) is not dict:
            return NOT_AN_OBJECT
        problem = self._validator.validate(event)
        if problem is not None:
            return Rejection(RejectKind.SCHEMA,
                             f"payload does not match schema id {self._id}: {problem}")
        if any(type(v) is dict for v in event.values()):
            return flatten(event)
        return event


def _reader(schema: WriterSchema) -> Reader:
    return JsonSchemaReader(schema)


register_format(SchemaType.JSON, _reader)
register("json-schema", lambda: WireDecoder(frozenset({SchemaType.JSON})))
