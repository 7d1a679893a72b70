"""Parsing prediction and label messages, and reading a model's spec."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.monitor.gen import T0, prediction
from worker.model.manifest import Manifest
from worker.monitor.views import (
    LabelView,
    ModelSpec,
    MonitorInputError,
    Outcome,
    PredictionView,
    same_label,
)

MESSAGE: dict[str, Any] = {"id": "e1", "score": 0.25, "label": 0, "model": "fraud",
                           "model_version": "3", "event_ts": T0 - 5, "scored_at": T0}


def test_prediction_messages_parse_and_round_trip() -> None:
    pred = PredictionView.from_message(MESSAGE)
    assert pred.event_time == T0 - 5 and pred.model_key == ("fraud", "3")
    assert pred.true_label is None
    no_event_time = PredictionView.from_message({**MESSAGE, "event_ts": None})
    assert no_event_time.event_time == T0
    replay = PredictionView.from_message({**MESSAGE, "is_fraud": 1}, true_label_field="is_fraud")
    assert replay.true_label == 1
    multi = PredictionView.from_message({**MESSAGE, "score": {"a": 1, "b": 0.0}, "label": "a"})
    assert multi.score == {"a": 1.0, "b": 0.0}
    for view in (pred, replay, multi, no_event_time):
        assert PredictionView.from_dict(orjson.loads(orjson.dumps(view.to_dict()))) == view


@pytest.mark.parametrize(("change", "message"), [
    ({"id": ""}, "'id'"), ({"score": "high"}, "'score'"), ({"score": {}}, "'score'"),
    ({"score": True}, "'score'"), ({"label": None}, "'label'"), ({"label": [1]}, "'label'"),
    ({"model": 3}, "'model'"), ({"scored_at": 1.5}, "'scored_at'"),
    ({"event_ts": "x"}, "'event_ts'"), ({"true_label": {"a": 1}}, "'true_label'"),
    ({"score": float("nan")}, "'score'"),
])
def test_bad_prediction_messages_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MonitorInputError, match=message):
        PredictionView.from_message({**MESSAGE, **change})


def test_label_messages() -> None:
    label = LabelView.from_message({"id": "e1", "label": 1, "ts": T0 + 9, "extra": 1}, T0 + 20)
    assert label.time == T0 + 9 and label.received_at == T0 + 20
    assert LabelView.from_message({"id": "e1", "label": "x"}, T0).time == T0
    assert LabelView.from_dict(orjson.loads(orjson.dumps(label.to_dict()))) == label
    with pytest.raises(MonitorInputError, match="'label'"):
        LabelView.from_message({"id": "e1"}, T0)
    outcome = Outcome(prediction(1, 0.5, 1), "x", T0, T0 + 1)
    assert Outcome.from_dict(orjson.loads(orjson.dumps(outcome.to_dict()))) == outcome


def test_same_label_across_json_types() -> None:
    assert same_label(1, 1.0) and same_label(1, "1") and same_label("a", "a")
    assert not same_label("1.0", 1) and not same_label(0, 1)


def manifest(task: str, **extra: Any) -> Manifest:
    return Manifest.parse({"name": "fraud", "version": "3", "task": task, "features": ["a"],
                           "artifact": "m.skops", "sha256": "0" * 64, **extra})


def test_model_spec_from_manifest_and_guess() -> None:
    spec = ModelSpec.from_manifest(manifest(
        "binary", classes=["legit", "fraud"],
        reference_histogram={"edges": [0, 0.5, 1], "counts": [9, 1]}))
    assert spec.task == "binary" and spec.positive == "fraud" and spec.reference is not None
    assert ModelSpec.from_manifest(manifest("regression")).task == "regression"
    assert ModelSpec.guess(prediction(1, {"a": 1.0}, "a")).task == "multiclass"
    assert ModelSpec.guess(prediction(1, 2.5, 2.5)).task == "regression"
    assert ModelSpec.guess(prediction(1, 0.2, 0)).task == "binary"
    assert ModelSpec.guess(prediction(1, 1.0, 1)).task == "binary"
    assert ModelSpec.guess(prediction(1, 0.0, "legit")).task == "binary"
