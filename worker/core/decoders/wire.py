"""Confluent's wire format: a magic byte 0, a 4-byte big-endian schema id, then the payload
written with that schema (Avro, Protobuf or JSON Schema), whose text is in a registry.

Pure: the decoder never asks the registry. The shell (worker/stream/schema_gate.py) looks
up the ids of a batch before it is scored and fills the ``SchemaBook`` the decoder reads:
a reader per known id, and the ids the registry said it does not know. A value whose id
is in neither is a bug of that order, not a bad record, and fails loudly.

Each format is a module (avro.py, protobuf.py, json_schema.py) that registers how its
schema text becomes a ``Reader`` (``register_format``) and its decoder name. Records are
flattened: a nested record's fields become ``outer.inner`` keys, as a model's features
name them.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from worker.core.decoders import EMPTY_VALUE, Decoded, precheck, register
from worker.core.decoders.json import JsonDecoder
from worker.errors import Rejection, RejectKind

MAGIC: Final = 0
HEADER: Final = 5
NO_MAGIC: Final = Rejection(
    RejectKind.DECODE, "no magic byte: the value is not in the Confluent wire format")
TOO_SHORT: Final = Rejection(
    RejectKind.DECODE, "wire format value shorter than its 5-byte header")


class SchemaType(StrEnum):
    """A registry's schema types, as its API spells them."""

    AVRO = "AVRO"
    PROTOBUF = "PROTOBUF"
    JSON = "JSON"


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A schema as the registry returned it for an id."""

    id: int
    type: SchemaType
    text: str
    #: The texts of the schemas it references (other subjects' versions), each after the
    #: ones it references itself: what the text's named types resolve against (Avro).
    references: tuple[str, ...] = ()


class Reader(Protocol):
    """The payload after the header -> a flat event dict, or a rejection."""

    @property
    def schema_type(self) -> SchemaType: ...

    def read(self, payload: bytes) -> dict[str, Any] | Rejection: ...


ReaderFactory = Callable[[WriterSchema], Reader]
_MODULE: Final = {SchemaType.AVRO: "avro", SchemaType.PROTOBUF: "protobuf",
                  SchemaType.JSON: "json_schema"}
_FORMATS: dict[SchemaType, ReaderFactory] = {}


def register_format(kind: SchemaType, factory: ReaderFactory) -> None:
    _FORMATS[kind] = factory


@dataclass(frozen=True, slots=True)
class Unusable:
    """An id whose schema cannot be read: unknown to the registry, or a text that does not
    parse. Its events are dead letters with this reason."""

    reason: str


@dataclass
class SchemaBook:
    """What the decoder knows of schema ids; filled by the shell, read by the decoder."""

    readers: dict[int, Reader | Unusable] = field(default_factory=dict)

    def missing(self, ids: Iterable[int]) -> list[int]:
        """The ids the shell still has to look up."""
        return sorted({i for i in ids if i not in self.readers})

    def learn(self, schema: WriterSchema) -> None:
        """Parse a fetched schema once (a text that does not parse makes its id unusable)."""
        if schema.type not in _FORMATS:  # a type this decoder does not take: still named
            with contextlib.suppress(ImportError):
                importlib.import_module(f"worker.core.decoders.{_MODULE[schema.type]}")
        factory = _FORMATS.get(schema.type)
        if factory is None:
            self.readers[schema.id] = Unusable(
                f"schema id {schema.id} is {schema.type.value}, which this worker does not "
                "read (install scoring-worker[registry])")
            return
        try:
            self.readers[schema.id] = factory(schema)
        except Exception as exc:  # a schema the library refuses: its events cannot be read
            self.readers[schema.id] = Unusable(f"schema id {schema.id} does not parse: {exc}")

    def unknown(self, schema_id: int) -> None:
        """The registry answered that it has no such id."""
        self.readers[schema_id] = Unusable(f"unknown schema id {schema_id} (not in the "
                                           "schema registry)")


def schema_ids(values: Sequence[bytes | None]) -> set[int]:
    """The schema ids a batch's wire-format values name."""
    return {int.from_bytes(v[1:HEADER], "big") for v in values
            if v is not None and len(v) >= HEADER and v[0] == MAGIC}


@dataclass
class WireDecoder:
    """Values in the wire format, of the ``accept`` schema types; ``json_too`` also takes
    plain JSON objects (``--input-format auto``: the first byte tells them apart)."""

    accept: frozenset[SchemaType]
    json_too: bool = False
    book: SchemaBook = field(default_factory=SchemaBook)
    _json: JsonDecoder = field(default_factory=JsonDecoder)

    def decode(self, values: Sequence[bytes | None], limit: int) -> Decoded:
        out = Decoded()
        readers, accept = self.book.readers, self.accept
        plain: list[int] = []
        for i, value in enumerate(values):
            if value is None or not value or len(value) > limit:
                out.rejected.append((i, precheck(value, limit) or EMPTY_VALUE))
            elif value[0] != MAGIC:
                if self.json_too:
                    plain.append(i)
                else:
                    out.rejected.append((i, NO_MAGIC))
            elif len(value) < HEADER:
                out.rejected.append((i, TOO_SHORT))
            else:
                schema_id = int.from_bytes(value[1:HEADER], "big")
                reader = readers[schema_id]  # KeyError: the shell did not look it up (a bug)
                got: dict[str, Any] | Rejection
                if isinstance(reader, Unusable):
                    got = Rejection(RejectKind.DECODE, reader.reason)
                elif reader.schema_type not in accept:
                    got = Rejection(RejectKind.DECODE, f"schema id {schema_id} is "
                                    f"{reader.schema_type.value}, expected "
                                    f"{' or '.join(sorted(a.value for a in accept))}")
                else:
                    got = reader.read(value[HEADER:])
                if isinstance(got, Rejection):
                    out.rejected.append((i, got))
                else:
                    out.events.append(got)
                    out.positions.append(i)
        if plain:
            _merge(out, self._json.decode([values[i] for i in plain], limit), plain)
        return out


def _merge(out: Decoded, more: Decoded, where: list[int]) -> None:
    """Fold a sub-batch's outcomes (positions into ``where``) into ``out``, in input order."""
    events = list(zip(out.positions, out.events, strict=True))
    events += [(where[p], e) for p, e in zip(more.positions, more.events, strict=True)]
    events.sort(key=lambda pe: pe[0])
    out.positions[:] = [p for p, _ in events]
    out.events[:] = [e for _, e in events]
    out.rejected.extend((where[p], r) for p, r in more.rejected)
    out.rejected.sort(key=lambda pr: pr[0])


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested records as ``outer.inner`` keys; other values as they are."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = prefix + key
        if type(value) is dict:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _auto() -> WireDecoder:
    """Every wire format whose library is installed, and plain JSON."""
    for module in _MODULE.values():
        with contextlib.suppress(ImportError):
            importlib.import_module(f"worker.core.decoders.{module}")
    return WireDecoder(frozenset(SchemaType), json_too=True)


register("auto", _auto)
