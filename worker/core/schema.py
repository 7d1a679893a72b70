"""JSON Schema loading and fast per-event validation.

Schemas are written in draft 2020-12. Validating with ``jsonschema`` costs tens
of microseconds per event, far too much for the hot path, so when a schema only
uses keywords whose meaning is identical in draft-07 it is compiled to Python
code by ``fastjsonschema`` (a few microseconds per event). Anything else falls
back to ``jsonschema``'s ``Draft202012Validator`` so that semantics never
silently change.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from worker.core.schema_flat import compile_flat, numeric_required
from worker.errors import SchemaLoadError

DRAFT_07_URI: Final = "http://json-schema.org/draft-07/schema#"

# Keywords that exist only in 2019-09/2020-12, or whose draft-07 meaning differs
# (fastjsonschema asserts content*, 2020-12 only annotates; "dependencies" is
# unknown to 2020-12 and thus ignored there but enforced by fastjsonschema).
_NOT_DRAFT_07: Final = frozenset({
    "prefixItems", "unevaluatedProperties", "unevaluatedItems", "dependentSchemas",
    "dependentRequired", "minContains", "maxContains", "$dynamicRef", "$dynamicAnchor",
    "$recursiveRef", "$recursiveAnchor", "$anchor", "$vocabulary", "contentEncoding",
    "contentMediaType", "contentSchema", "dependencies",
})

# Keywords that are allowed next to "$ref" without changing its meaning; in
# draft-07 every sibling of "$ref" is ignored, in 2020-12 they all apply.
_REF_SAFE_SIBLINGS: Final = frozenset(
    {"$ref", "$comment", "description", "title", "examples", "default", "deprecated"}
)
_SCHEMA_MAP_KEYWORDS: Final = ("properties", "patternProperties", "$defs", "definitions")
_SCHEMA_KEYWORDS: Final = (
    "items",
    "additionalItems",
    "additionalProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
)
_SCHEMA_LIST_KEYWORDS: Final = ("allOf", "anyOf", "oneOf")
_MAX_VALUE_REPR: Final = 60
_MAX_MESSAGE: Final = 110


def load_schema_json(path: Path | str) -> dict[str, Any]:
    """Read a JSON Schema document and check it against the 2020-12 metaschema."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SchemaLoadError(f"schema file not found: {path}") from None
    except OSError as exc:
        raise SchemaLoadError(f"cannot read schema file {path}: {exc.strerror}") from None
    try:
        schema = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaLoadError(f"schema file {path} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise SchemaLoadError(f"schema file {path} must contain a JSON object")
    _check_schema(schema, f"file {path}")
    return schema


def _check_schema(schema: dict[str, Any], source: str) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _format_path(exc.absolute_path)
        raise SchemaLoadError(
            f"schema {source} is not a valid 2020-12 schema at {where}: {_one_line(exc.message)}"
        ) from None


def schema_errors(instance: object, schema: dict[str, Any]) -> list[str]:
    """All validation errors of ``instance`` under full 2020-12 rules (for tests)."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    return [f"{_format_path(e.absolute_path)}: {_one_line(e.message)}" for e in errors]


def uses_only_draft_07(schema: object) -> bool:
    """True when ``schema`` means the same under draft-07 as under 2020-12."""
    return all(_is_draft_07_node(node) for node in _subschemas(schema))


class EventValidator:
    """A compiled schema; ``validate`` returns None or a one-line reason."""

    __slots__ = ("_check", "engine", "numeric", "source")

    def __init__(
        self, schema: dict[str, Any], *, source: str = "<schema>", prefer_fast: bool = True
    ) -> None:
        _check_schema(schema, source)
        _check_refs(schema, source)
        self.source = source
        #: Properties every valid event has as an int or float (flat engine only).
        self.numeric: frozenset[str] = frozenset()
        self.engine: str
        self._check: Callable[[object], str | None]
        flat = compile_flat(schema) if prefer_fast else None
        fast = prefer_fast and flat is None and uses_only_draft_07(schema)
        compiled = _compile_fast(schema) if fast else None
        if flat is not None:
            self.engine = "flat"
            self.numeric = numeric_required(schema)
            self._check = _flat_checker(flat, _slow_checker(Draft202012Validator(schema)))
        elif compiled is not None:
            self.engine = "fastjsonschema"
            self._check = _fast_checker(compiled)
        else:
            self.engine = "jsonschema"
            self._check = _slow_checker(Draft202012Validator(schema))

    @classmethod
    def from_file(cls, path: Path | str) -> EventValidator:
        return cls(load_schema_json(path), source=str(path))

    def validate(self, obj: object) -> str | None:
        return self._check(obj)


def _check_refs(schema: dict[str, Any], source: str) -> None:
    """Refuse at load time what would otherwise fail on the first event."""
    anchors = {node.get("$anchor") for node in _subschemas(schema)}
    for node in _subschemas(schema):
        ref = node.get("$ref")
        if ref is None:
            continue
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaLoadError(
                f"schema {source}: only local $ref ('#/...') is supported, got {ref!r}"
            )
        if ref.startswith("#/") or ref == "#":
            _resolve_pointer(schema, ref, source)
        elif ref[1:] not in anchors:
            raise SchemaLoadError(f"schema {source}: $ref {ref!r} does not resolve")


def _resolve_pointer(schema: dict[str, Any], ref: str, source: str) -> None:
    target: object = schema
    for raw in ref[2:].split("/") if ref != "#" else []:
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            raise SchemaLoadError(f"schema {source}: $ref {ref!r} does not resolve")


def _compile_fast(schema: dict[str, Any]) -> Callable[[object], object] | None:
    draft07 = copy.deepcopy(schema)
    draft07["$schema"] = DRAFT_07_URI
    try:
        # use_default=False: fastjsonschema would otherwise write defaults into
        # the event. handlers refuse remote $ref: no network I/O while loading.
        return fastjsonschema.compile(
            draft07,
            handlers=_NO_REMOTE_REFS,
            use_default=False,
            use_formats=False,
        )
    except Exception:  # any compile problem: the reference validator still works
        return None


def _refuse_remote(uri: str) -> Any:
    raise SchemaLoadError(f"remote $ref not allowed: {uri}")


_NO_REMOTE_REFS: Final = {scheme: _refuse_remote for scheme in ("http", "https", "file", "ftp")}


def _fast_checker(compiled: Callable[[object], object]) -> Callable[[object], str | None]:
    exc_type = fastjsonschema.JsonSchemaValueException

    def check(obj: object) -> str | None:
        try:
            compiled(obj)
        except exc_type as exc:
            return _fast_message(exc)
        return None

    return check


def _flat_checker(
    is_valid: Callable[[object], bool], explain: Callable[[object], str | None]
) -> Callable[[object], str | None]:
    """The generated test decides; the reference validator words the failures."""

    def check(obj: object) -> str | None:
        return None if is_valid(obj) else explain(obj)

    return check


def _slow_checker(validator: Draft202012Validator) -> Callable[[object], str | None]:
    def check(obj: object) -> str | None:
        error = best_match(validator.iter_errors(obj))
        if error is None:
            return None
        message = _one_line(error.message)
        if len(message) > _MAX_MESSAGE:  # the message embeds the offending value
            message = message[: _MAX_MESSAGE - 3] + "..."
        return f"{_format_path(error.absolute_path)}: {message}"

    return check


def _fast_message(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """Phrase fastjsonschema errors like jsonschema does, for stable messages."""
    name = exc.name or "data"
    where = name[4:].lstrip(".") or "$"
    rule, value, expected = exc.rule, exc.value, exc.rule_definition
    if rule == "type":
        types = expected if isinstance(expected, list) else [expected]
        wanted = ", ".join(repr(t) for t in types)
        return f"{where}: {_short_repr(value)} is not of type {wanted}"
    if rule == "required" and isinstance(value, dict) and isinstance(expected, list):
        missing = [key for key in expected if key not in value]
        return f"{where}: {', '.join(map(repr, missing))} is a required property"
    if rule == "minimum":
        return f"{where}: {_short_repr(value)} is less than the minimum of {expected!r}"
    if rule == "maximum":
        return f"{where}: {_short_repr(value)} is greater than the maximum of {expected!r}"
    if rule == "enum":
        return f"{where}: {_short_repr(value)} is not one of {expected!r}"
    detail = exc.message[len(name) :].strip() if exc.message.startswith(name) else exc.message
    return f"{where}: {_one_line(detail)}"


def _is_draft_07_node(node: dict[str, Any]) -> bool:
    if not _NOT_DRAFT_07.isdisjoint(node):
        return False
    if isinstance(node.get("items"), list):
        return False  # invalid in 2020-12, tuple validation in draft-07
    return "$ref" not in node or _REF_SAFE_SIBLINGS.issuperset(node)


def _subschemas(schema: object) -> Iterator[dict[str, Any]]:
    """Every (sub)schema object, skipping values that merely look like schemas."""
    if not isinstance(schema, dict):
        return
    yield schema
    for key in (*_SCHEMA_MAP_KEYWORDS, "dependentSchemas"):
        value = schema.get(key)
        if isinstance(value, dict):
            for sub in value.values():
                yield from _subschemas(sub)
    for key in (*_SCHEMA_KEYWORDS, "unevaluatedItems", "unevaluatedProperties"):
        value = schema.get(key)
        subs = value if isinstance(value, list) else [value]
        for sub in subs:
            yield from _subschemas(sub)
    for key in (*_SCHEMA_LIST_KEYWORDS, "prefixItems"):
        value = schema.get(key)
        if isinstance(value, list):
            for sub in value:
                yield from _subschemas(sub)


def _format_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def _short_repr(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_VALUE_REPR:
        return text[: _MAX_VALUE_REPR - 3] + "..."
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = [
    "DRAFT_07_URI",
    "EventValidator",
    "load_schema_json",
    "schema_errors",
    "uses_only_draft_07",
]
