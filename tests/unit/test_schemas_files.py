"""schemas/*.json are valid 2020-12 schemas, and what we produce follows them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.unit.helpers import (
    SCHEMAS,
    binary_bundle,
    event,
    multiclass_bundle,
    regression_bundle,
    without,
)
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.core.schema import load_schema_json, schema_errors
from worker.devtools.demo import make_events
from worker.errors import RejectKind

SCHEMA_FILES = sorted(SCHEMAS.glob("*.json"))


def test_the_four_contracts_exist() -> None:
    assert {p.name for p in SCHEMA_FILES} >= {
        "transaction.schema.json", "prediction.schema.json", "label.schema.json",
        "dead_letter.schema.json",
    }


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_file_is_valid_2020_12_and_documented(path: Path) -> None:
    schema = load_schema_json(path)  # raises on an invalid schema
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/" + path.name)
    assert schema.get("description")
    for name, field in schema.get("properties", {}).items():
        assert field.get("description"), f"{path.name}: property {name} has no description"


def prediction_outcomes(tmp_path: Path) -> list[dict[str, Any]]:
    records = []
    values = [orjson.dumps(event(0)), orjson.dumps(without(event(1), "ts"))]
    for folder, maker in (("b", binary_bundle), ("m", multiclass_bundle), ("r", regression_bundle)):
        ctx = ScoringContext(maker(tmp_path / folder))
        for outcome in score_values(values, ctx, now_ms=1_700_000_000_123):
            assert isinstance(outcome, Prediction)
            records.append(orjson.loads(outcome.payload))
    return records


def test_pipeline_predictions_validate(tmp_path: Path) -> None:
    schema = load_schema_json(SCHEMAS / "prediction.schema.json")
    records = prediction_outcomes(tmp_path)
    assert len(records) == 6
    for record in records:
        assert schema_errors(record, schema) == [], record
    assert schema_errors({**records[0], "score": "high"}, schema) != []
    assert schema_errors(without(records[0], "model_version"), schema) != []


def test_demo_events_and_labels_validate() -> None:
    tx = load_schema_json(SCHEMAS / "transaction.schema.json")
    label = load_schema_json(SCHEMAS / "label.schema.json")
    events, labels = make_events(np.random.default_rng(0), 50, 0, 1_700_000_000_000, True)
    for e, y in zip(events, labels, strict=True):
        assert schema_errors(e, tx) == []
        assert schema_errors({"id": e["id"], "label": y, "ts": e["ts"] + 1}, label) == []
    assert schema_errors({"id": "x"}, label) == ["$: 'label' is a required property"]


def test_dead_letter_headers_contract() -> None:
    schema = load_schema_json(SCHEMAS / "dead_letter.schema.json")
    headers = {
        "dlq.error.kind": "features", "dlq.error.message": "feature 'amount' is missing",
        "dlq.source.topic": "transactions", "dlq.source.partition": "3",
        "dlq.source.offset": "12345", "dlq.model.name": "fraud-demo", "dlq.model.version": "1",
        "dlq.worker.id": "worker-1", "dlq.failed_at": "1700000000000",
    }
    assert schema_errors(headers, schema) == []
    kinds = schema["properties"]["dlq.error.kind"]["enum"]
    assert kinds == [k.value for k in RejectKind]
    assert schema_errors({**headers, "dlq.error.kind": "timeout"}, schema) != []
    assert schema_errors({**headers, "dlq.source.offset": "-1"}, schema) != []
    assert schema_errors(without(headers, "dlq.worker.id"), schema) != []
