"""worker.core.schema: loading, the fast/slow engine choice, messages, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.unit.helpers import SCHEMAS
from worker.core.schema import EventValidator, load_schema_json, schema_errors, uses_only_draft_07
from worker.errors import SchemaLoadError

TX_SCHEMA = SCHEMAS / "transaction.schema.json"
GOOD = {"id": "tx-1", "ts": 1_700_000_000_000, "card_id": "card-1", "amount": 12.5, "hour": 3,
        "merchant_risk": 0.2, "card_age_days": 300.0, "velocity_1h": 1, "distance_km": 3.2,
        "foreign": 0, "online": 1, "avg_amount_30d": 40.1}


def write(tmp_path: Path, schema: object) -> Path:
    path = tmp_path / "s.json"
    path.write_bytes(orjson.dumps(schema))
    return path


@pytest.fixture(scope="module")
def fast() -> EventValidator:
    return EventValidator.from_file(TX_SCHEMA)


@pytest.fixture(scope="module")
def slow() -> EventValidator:
    return EventValidator(load_schema_json(TX_SCHEMA), prefer_fast=False)


def test_transaction_schema_compiles_to_fast_code(fast: EventValidator) -> None:
    assert fast.engine == "flat"
    assert fast.validate(GOOD) is None


def test_nested_schema_compiles_to_fastjsonschema() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"id": {"type": "string"},
                             "geo": {"type": "object", "required": ["lat"]}}}
    v = EventValidator(schema)
    assert v.engine == "fastjsonschema"
    assert v.validate({"id": "a", "geo": {"lat": 1}}) is None
    assert v.validate({"id": "a", "geo": {}}) == "geo: 'lat' is a required property"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": "abc"}, "amount: 'abc' is not of type 'number'"),
        ({"amount": True}, "amount: True is not of type 'number'"),
        ({"amount": -1}, "amount: -1 is less than the minimum of 0"),
        ({"hour": 24}, "hour: 24 is greater than the maximum of 23"),
        ({"velocity_1h": 1.5}, "velocity_1h: 1.5 is not of type 'integer'"),
        ({"foreign": 2}, "foreign: 2 is not one of [0, 1]"),
        ({"id": 5}, "id: 5 is not of type 'string'"),
        ({"id": None}, "id: None is not of type 'string'"),
    ],
)
def test_fast_messages_name_the_path(
    fast: EventValidator, slow: EventValidator, change: dict[str, Any], message: str
) -> None:
    bad = {**GOOD, **change}
    assert fast.validate(bad) == message
    assert slow.validate(bad) is not None


def test_missing_required_and_non_objects(fast: EventValidator) -> None:
    no_id = {k: v for k, v in GOOD.items() if k != "id"}
    assert fast.validate(no_id) == "$: 'id' is a required property"
    assert fast.validate([1]) == "$: [1] is not of type 'object'"
    assert fast.validate("x" * 500) is not None and len(fast.validate("x" * 500) or "") < 120


@pytest.mark.parametrize(
    "instance",
    [
        GOOD,
        {**GOOD, "hour": 23.0},  # an integral float is an integer in both drafts
        {**GOOD, "extra": {"x": [1, 2]}},
        {**GOOD, "label": 1},
        {**GOOD, "label": 2},
        {**GOOD, "merchant_risk": 1.01},
        {**GOOD, "ts": "yesterday"},
        {**GOOD, "id": ""},
        {k: v for k, v in GOOD.items() if k != "online"},
        42,
        None,
    ],
)
def test_fast_and_reference_engines_agree(
    fast: EventValidator, slow: EventValidator, instance: object
) -> None:
    assert (fast.validate(instance) is None) == (slow.validate(instance) is None)
    assert slow.engine == "jsonschema"


def test_2020_12_only_keywords_fall_back_to_jsonschema(tmp_path: Path) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
              "prefixItems": [{"type": "integer"}, {"type": "string"}]}
    v = EventValidator.from_file(write(tmp_path, schema))
    assert v.engine == "jsonschema"
    assert v.validate([1, "x", None]) is None
    assert v.validate(["x", "x"]) == "[0]: 'x' is not of type 'integer'"


def test_ref_with_siblings_falls_back_because_draft_07_ignores_them() -> None:
    schema = {"$defs": {"n": {"type": "number"}},
              "properties": {"a": {"$ref": "#/$defs/n", "minimum": 5}}}
    assert not uses_only_draft_07(schema)
    v = EventValidator(schema)
    assert v.engine == "jsonschema"
    assert v.validate({"a": 3}) == "a: 3 is less than the minimum of 5"


def test_local_defs_refs_stay_fast_and_keyword_lookalike_names_do_not_count() -> None:
    schema = {"$id": "https://example.test/s.json", "$defs": {"n": {"type": "number"}},
              "properties": {"prefixItems": {"$ref": "#/$defs/n", "description": "a name"}},
              "examples": [{"unevaluatedProperties": False}]}
    v = EventValidator(schema)
    assert v.engine == "fastjsonschema"
    assert v.validate({"prefixItems": 1}) is None
    assert v.validate({"prefixItems": "1"}) == "prefixItems: '1' is not of type 'number'"


def test_defaults_are_not_written_into_events() -> None:
    v = EventValidator({"type": "object", "properties": {"a": {"default": 42}}})
    event: dict[str, Any] = {}
    assert v.validate(event) is None
    assert event == {}


def test_formats_are_annotations_as_in_2020_12() -> None:
    v = EventValidator({"properties": {"when": {"type": "string", "format": "date-time"}}})
    assert v.validate({"when": "not a date"}) is None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "schema file not found"),
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "must contain a JSON object"),
        (b'{"type": 12}', "is not a valid 2020-12 schema at type"),
        (b'{"properties": {"a": {"type": "numbr"}}}', "schema at properties.a.type"),
        (b'{"minimum": "zero"}', "is not a valid 2020-12 schema at minimum"),
    ],
)
def test_unloadable_schema_files_give_one_line(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "s.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SchemaLoadError) as exc:
        EventValidator.from_file(path)
    assert fragment in str(exc.value)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("https://example.test/other.json", "only local $ref"),
        ("other.json#/x", "only local $ref"),
        ("#/$defs/missing", "does not resolve"),
        ("#nowhere", "does not resolve"),
    ],
)
def test_refs_that_would_fail_later_are_refused_at_load(
    tmp_path: Path, ref: str, fragment: str
) -> None:
    schema = {"$defs": {"n": {"type": "number"}}, "properties": {"a": {"$ref": ref}}}
    with pytest.raises(SchemaLoadError) as exc:
        EventValidator.from_file(write(tmp_path, schema))
    assert fragment in str(exc.value)


def test_anchors_fall_back_and_resolve() -> None:
    schema = {"$defs": {"n": {"$anchor": "num", "type": "number"}},
              "properties": {"a": {"$ref": "#num"}}}
    v = EventValidator(schema)
    assert v.engine == "jsonschema"
    assert v.validate({"a": "x"}) == "a: 'x' is not of type 'number'"


def test_schemas_given_as_dicts_are_checked_too() -> None:
    with pytest.raises(SchemaLoadError, match="not a valid 2020-12 schema at minimum"):
        EventValidator({"minimum": "zero"}, source="inline")


def test_schema_errors_helper_lists_every_problem() -> None:
    schema = load_schema_json(TX_SCHEMA)
    assert schema_errors(GOOD, schema) == []
    problems = schema_errors({**GOOD, "amount": "x", "hour": 99}, schema)
    assert problems == [
        "amount: 'x' is not of type 'number'",
        "hour: 99 is greater than the maximum of 23",
    ]
