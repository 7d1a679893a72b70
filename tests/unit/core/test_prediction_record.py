"""One prediction record for the worker and the monitor, held against its JSON Schema:
what the worker encodes validates, and the monitor decodes it back to the same record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.unit.helpers import (
    SCHEMAS,
    binary_bundle,
    event,
    multiclass_bundle,
    regression_bundle,
)
from worker.core import records
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.model.bundle import ModelBundle

VALIDATOR = Draft202012Validator(orjson.loads((SCHEMAS / "prediction.schema.json").read_bytes()))


@pytest.mark.parametrize("make", [binary_bundle, multiclass_bundle, regression_bundle])
def test_worker_records_validate_and_decode_back(tmp_path: Path, make: Any) -> None:
    bundle: ModelBundle = make(tmp_path / "m")
    ctx = ScoringContext(bundle, label_field="truth")
    events = [event(0), event(1, truth=1), event(2, ts="not an int"), event(3, truth="fraud")]
    outcomes = score_values([orjson.dumps(e) for e in events], ctx, 1_700_000_000_123)
    assert all(isinstance(o, Prediction) for o in outcomes)
    for o in outcomes:
        assert isinstance(o, Prediction)
        assert o.payload == records.encode(o.record)
        assert list(VALIDATOR.iter_errors(orjson.loads(o.payload))) == []
        view = records.decode(o.payload)
        assert view.to_dict() == orjson.loads(o.payload)
        assert view.event_time == o.record.get("event_ts", o.record["scored_at"])


def test_the_record_type_names_every_schema_field() -> None:
    schema = orjson.loads((SCHEMAS / "prediction.schema.json").read_bytes())
    assert set(records.PredictionRecord.__annotations__) == set(schema["properties"])
    assert set(records.PredictionRecord.__required_keys__) == set(schema["required"])


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"{oops", "prediction is not JSON"),
        (b"[1]", "prediction must be a JSON object"),
        (b'{"id": "", "score": 0.1}', "'id' must be a non-empty string"),
        (b'{"id": "a", "score": "high", "label": 1}', "'score' must be a finite number"),
    ],
)
def test_unusable_records_are_refused_with_one_line(value: bytes, problem: str) -> None:
    with pytest.raises(records.RecordError, match=problem):
        records.decode(value)
