"""The decoder seam: one decoder per input format, raw message values -> records.

A decoder turns a batch of raw values (Kafka message values, or the rows of a
file) into event objects (dicts) and rejections, one outcome per value. What is
the same for every format (tombstones, empty values, the size limit) is checked
here, once, by ``precheck``; a decoder handles the bytes of its own format only.

Adding a format is adding a module with a ``Decoder`` and calling ``register``;
``get(name)`` builds one (``json`` for the stream; ``csv`` needs its header and is
built by batch mode).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from worker.errors import Rejection, RejectKind

TOMBSTONE: Final = Rejection(RejectKind.DECODE, "null value (tombstone)")
EMPTY_VALUE: Final = Rejection(RejectKind.DECODE, "empty value")
INVALID_UTF8: Final = Rejection(RejectKind.DECODE, "value is not valid UTF-8")
NOT_AN_OBJECT: Final = Rejection(RejectKind.SCHEMA, "event must be a JSON object")


@dataclass(slots=True)
class Decoded:
    """``events[k]`` came from input ``positions[k]``; every other input is in ``rejected``."""

    events: list[dict[str, Any]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)


class Decoder(Protocol):
    """Raw values of one format -> event objects or rejections, in input order."""

    def decode(self, values: Sequence[bytes | None], limit: int) -> Decoded:
        """``limit``: values longer than this many bytes are rejected unread."""


def precheck(value: bytes | None, limit: int) -> Rejection | None:
    """What every format refuses before reading: tombstones, empty and oversized values."""
    if value is None:
        return TOMBSTONE
    if len(value) > limit:
        return Rejection(RejectKind.DECODE,
                         f"value of {len(value)} bytes exceeds the {limit}-byte limit")
    if not value:
        return EMPTY_VALUE
    return None


_FACTORIES: dict[str, Callable[[], Decoder]] = {}


def register(name: str, factory: Callable[[], Decoder]) -> None:
    """Make a format available by name (``get``)."""
    _FACTORIES[name] = factory


#: Where each built-in format lives, imported on first use: a worker that reads JSON never
#: imports fastavro or protobuf (the wire formats need ``scoring-worker[registry]``).
_MODULES: Final = {"json": "json", "csv": "csv", "avro": "avro", "protobuf": "protobuf",
                   "json-schema": "json_schema", "auto": "wire"}
FORMATS: Final = ("json", "avro", "protobuf", "json-schema", "auto")  # what the stream reads


def get(name: str) -> Decoder:
    if name not in _FACTORIES and name in _MODULES:
        try:
            importlib.import_module(f"worker.core.decoders.{_MODULES[name]}")
        except ImportError as exc:
            raise ValueError(f"input format {name!r} needs the registry extra: pip install "
                             f"'scoring-worker[registry]' ({exc})") from None
    try:
        return _FACTORIES[name]()
    except KeyError:
        known = ", ".join(sorted(set(_FACTORIES) | set(_MODULES)))
        raise ValueError(f"unknown input format {name!r}, expected one of {known}") from None
