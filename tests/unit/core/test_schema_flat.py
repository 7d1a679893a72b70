"""The generated flat validator agrees with jsonschema's reference validator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from worker.core.schema_flat import compile_flat, eligible

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "n", "i"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 5},
        "n": {"type": "number", "minimum": 0, "exclusiveMaximum": 10},
        "i": {"type": "integer", "exclusiveMinimum": -3, "maximum": 3},
        "e": {"type": ["integer", "null"], "enum": [0, 1, None]},
        "s": {"type": "string", "enum": ["a", "b"]},
        "b": {"type": "boolean"},
        "x": {"type": ["number", "string"], "minimum": 2, "minLength": 2},
    },
}

VALUES: list[Any] = [0, 1, -3, -2, 3, 4, 9.99, 10, 10.0, 2.0, 3.0, 0.5, -0.0, True, False, None,
                     "", "a", "b", "abcdef", "ab", [], {}, 1e300, 2**70]


def test_agrees_with_jsonschema_on_random_events() -> None:
    check = compile_flat(SCHEMA)
    assert check is not None
    reference = Draft202012Validator(SCHEMA)
    rng = np.random.default_rng(0)
    keys = list(SCHEMA["properties"])
    for _ in range(20_000):
        event = {k: VALUES[rng.integers(len(VALUES))] for k in keys if rng.random() < 0.85}
        if rng.random() < 0.1:
            event["extra"] = "ignored: additionalProperties is allowed"
        assert check(event) == reference.is_valid(event), event
    for not_object in ([1], "x", None, 3):
        assert check(not_object) is False


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "additionalProperties": False},
        {"type": "object", "properties": {"o": {"type": "object"}}},
        {"type": "object", "properties": {"b": {"enum": [True, 1]}}},
        {"type": "object", "properties": {"p": {"type": "string", "pattern": "^a"}}},
        {"type": "array"},
        {"type": "object", "properties": {"r": {"$ref": "#/$defs/x"}}},
    ],
)
def test_anything_else_is_left_to_the_general_engines(schema: dict[str, Any]) -> None:
    assert not eligible(schema)
    assert compile_flat(schema) is None
