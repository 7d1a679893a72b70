"""A reader compiled once per flat Avro record schema: twice as fast as fastavro's per-record
call on the events a model reads, which the wire format's throughput target needs.

Flat means fields of primitive types (null, boolean, int, long, float, double, string),
enums, unions of those (nullable fields), and logical types read as their underlying
value. Anything else (nested records, arrays, maps, bytes, fixed, decimal, named type
references) makes ``compile_flat`` return None and fastavro reads the schema instead.
The generated function reads from the start of the payload and returns the record and
where it stopped; truncated or malformed bytes raise (IndexError, ValueError,
struct.error, UnicodeDecodeError), which the caller turns into a rejection.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

FlatReader = Callable[[bytes], tuple[dict[str, Any], int]]
_NUMBERS: Final = {"int", "long"}
_UNDERLYING_OK: Final = frozenset({"timestamp-millis", "timestamp-micros", "date",
                                   "time-millis", "time-micros", "local-timestamp-millis",
                                   "local-timestamp-micros", "uuid"})


def _varint(b: bytes, pos: int, x: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``x`` had its continuation bit set."""
    x &= 0x7F
    shift = 7
    while True:
        y = b[pos]
        pos += 1
        x |= (y & 0x7F) << shift
        if not y & 0x80:
            return x, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


_READ_LONG: Final = ["x = b[pos]", "pos += 1", "if x & 0x80: x, pos = _varint(b, pos, x)",
                     "x = (x >> 1) ^ -(x & 1)"]


class _Unsupported(Exception):
    pass


def _primitive(kind: Any) -> Any:
    """The type a field's declared type reads as, or _Unsupported."""
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if logical is not None and logical not in _UNDERLYING_OK:
            raise _Unsupported(logical)
        if kind.get("type") == "enum":
            return kind
        return _primitive(kind.get("type"))
    if isinstance(kind, list) or kind in ("null", "boolean", "int", "long", "float", "double",
                                          "string"):
        return kind
    raise _Unsupported(kind)


def _value(kind: Any, consts: dict[str, Any]) -> list[str]:
    """Lines that read one value of ``kind`` into ``v``."""
    kind = _primitive(kind)
    if kind == "null":
        return ["v = None"]
    if kind == "boolean":
        return ["x = b[pos]", "pos += 1", "if x > 1: raise ValueError('boolean byte %d' % x)",
                "v = x == 1"]
    if isinstance(kind, str) and kind in _NUMBERS:
        return [*_READ_LONG, "v = x"]
    if kind == "float":
        return ["v = _float(b, pos)[0]", "pos += 4"]
    if kind == "double":
        return ["v = _double(b, pos)[0]", "pos += 8"]
    if kind == "string":
        return [*_READ_LONG, "if x < 0 or pos + x > len(b): raise ValueError('bad length')",
                "v = b[pos:pos + x].decode()", "pos += x"]
    if isinstance(kind, dict):  # an enum
        name = f"_symbols{len(consts)}"
        consts[name] = tuple(kind["symbols"])
        return [*_READ_LONG, f"if not 0 <= x < {len(consts[name])}: raise "
                "ValueError('enum index %d' % x)", f"v = {name}[x]"]
    lines = [*_READ_LONG, "u = x"]  # a union: the branch index, then its value
    for i, branch in enumerate(kind):
        inner = _value(branch, consts)
        lines += [f"{'if' if i == 0 else 'elif'} u == {i}:", *("    " + s for s in inner)]
    return [*lines, "else:", "    raise ValueError('union index %d' % u)"]


def compile_flat(tree: Any) -> FlatReader | None:
    """The reader of a flat record schema (parsed JSON), or None for any other schema."""
    if not isinstance(tree, dict) or tree.get("type") != "record":
        return None
    consts: dict[str, Any] = {"_varint": _varint, "_float": struct.Struct("<f").unpack_from,
                              "_double": struct.Struct("<d").unpack_from}
    body = ["pos = 0", "out = {}"]
    try:
        for f in tree["fields"]:
            body += [*_value(f["type"], consts), f"out[{str(f['name'])!r}] = v"]
    except (_Unsupported, KeyError, TypeError):
        return None
    source = "def read(b):\n" + "".join(f"    {line}\n" for line in [*body, "return out, pos"])
    exec(compile(source, f"<avro reader {tree.get('name')}>", "exec"), consts)
    reader: FlatReader = consts["read"]
    return reader
