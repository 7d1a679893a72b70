"""A specialised validator for flat event schemas, compiled to straight-line Python.

Most event schemas are one object of scalar properties with types, bounds,
lengths and enums. fastjsonschema handles them generically at ~10-15 us per
event of 30 properties; code generated for exactly this shape answers
valid/invalid in ~1-2 us. It only says *whether* an event is valid: the
reference validator words the (rare) failures, so messages stay identical
whichever engine is used.

``compile_flat`` returns None for any schema outside the subset, and callers
fall back to the general engines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

_ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "format",
     "deprecated", "readOnly", "writeOnly"}
)
_ROOT_KEYS: Final = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}
_PROP_KEYS: Final = _ANNOTATIONS | {
    "type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "enum",
}
_TYPES: Final = {"number", "integer", "string", "boolean", "null"}
_BOUND_OPS: Final = {"minimum": "<", "maximum": ">", "exclusiveMinimum": "<=",
                     "exclusiveMaximum": ">="}


def _is_number(x: object) -> bool:
    return type(x) in (int, float)


def eligible(schema: object) -> bool:
    """True when the schema is a flat object of scalar properties this module handles."""
    if not isinstance(schema, dict) or not _ROOT_KEYS.issuperset(schema):
        return False
    if schema.get("type") != "object" or schema.get("additionalProperties", True) is not True:
        return False
    props, required = schema.get("properties", {}), schema.get("required", [])
    if not isinstance(props, dict) or not isinstance(required, list):
        return False
    if not all(isinstance(r, str) for r in required):
        return False
    return all(isinstance(p, dict) and _prop_eligible(p) for p in props.values())


def _prop_eligible(p: dict[str, Any]) -> bool:
    if not _PROP_KEYS.issuperset(p):
        return False
    types = p.get("type")
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or not types or not _TYPES.issuperset(types):
        return False
    if any(k in p and not _is_number(p[k]) for k in _BOUND_OPS):
        return False
    if any(k in p and type(p[k]) is not int for k in ("minLength", "maxLength")):
        return False
    enum = p.get("enum")
    # Python's == treats True as 1; JSON Schema does not: leave boolean enums to the
    # general engines rather than get them subtly wrong.
    return enum is None or (isinstance(enum, list) and all(
        type(e) in (int, float, str) or e is None for e in enum))


def _type_test(types: list[str]) -> str:
    """An expression true when ``v`` (its type in ``t``) has one of the JSON types."""
    tests = []
    for name in types:
        if name == "number":
            tests.append("t is float or t is int")
        elif name == "integer":
            # JSON Schema: 3.0 is an integer; True is not.
            tests.append("t is int or (t is float and v.is_integer())")
        elif name == "string":
            tests.append("t is str")
        elif name == "boolean":
            tests.append("t is bool")
        else:
            tests.append("v is None")
    return " or ".join(f"({x})" for x in tests)


def _prop_lines(i: int, name: str, p: dict[str, Any], required: bool) -> list[str]:
    types = p["type"] if isinstance(p["type"], list) else [p["type"]]
    ind = "    " if required else "        "
    lines = [f"    v = d[{name!r}]" if required else f"    v = d.get({name!r}, _MISSING)"]
    if not required:
        lines.append("    if v is not _MISSING:")
    lines += [f"{ind}t = type(v)", f"{ind}if not ({_type_test(types)}):", f"{ind}    return False"]
    numeric = "t is float or t is int"
    for key, op in _BOUND_OPS.items():
        if key in p:
            lines.append(f"{ind}if ({numeric}) and v {op} {p[key]!r}:")
            lines.append(f"{ind}    return False")
    for key, op in (("minLength", "<"), ("maxLength", ">")):
        if key in p:
            lines.append(f"{ind}if t is str and len(v) {op} {p[key]!r}:")
            lines.append(f"{ind}    return False")
    if "enum" in p:
        lines.append(f"{ind}if t is bool or v not in _ENUM{i}:")
        lines.append(f"{ind}    return False")
    return lines


def numeric_required(schema: object) -> frozenset[str]:
    """Properties a flat schema guarantees present as int or float (never bool)."""
    if not eligible(schema):
        return frozenset()
    assert isinstance(schema, dict)
    required = set(schema.get("required", []))
    return frozenset(
        name for name, p in schema.get("properties", {}).items()
        if name in required and set(p["type"] if isinstance(p["type"], list) else [p["type"]])
        <= {"number", "integer"}
    )


def compile_flat(schema: object) -> Callable[[object], bool] | None:
    """A function telling whether an event is valid, or None if the schema is not flat."""
    if not eligible(schema):
        return None
    assert isinstance(schema, dict)
    props: dict[str, dict[str, Any]] = schema.get("properties", {})
    required = set(schema.get("required", []))
    # A missing required property surfaces as KeyError: free on the valid path,
    # where an explicit subset test of the keys would cost ~1 us per event.
    body = [f"    d[{name!r}]" for name in required if name not in props]
    env: dict[str, Any] = {"_MISSING": object()}
    for i, (name, p) in enumerate(props.items()):
        body += _prop_lines(i, name, p, name in required)
        if "enum" in p:
            env[f"_ENUM{i}"] = tuple(p["enum"])
    lines = ["def _body(d):", *body, "    return True",
             "def check(d):", "    if type(d) is not dict:", "        return False",
             "    try:", "        return _body(d)", "    except KeyError:", "        return False"]
    exec("\n".join(lines), env)  # generated from the schema's own keywords only
    check: Callable[[object], bool] = env["check"]
    return check
