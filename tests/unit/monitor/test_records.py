"""Published records follow schemas/model_metrics and schemas/model_alert."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tests.unit.helpers import SCHEMAS
from tests.unit.monitor.gen import BINARY, MULTICLASS, REGRESSION, T0, binary_outcomes, prediction
from worker.core.schema import load_schema_json, schema_errors
from worker.monitor.aggregate import WindowAgg, add_outcomes, add_predictions
from worker.monitor.alerts import DEFAULT_RULES, AlertState, evaluate
from worker.monitor.catalog import metrics
from worker.monitor.records import alert_key, alert_record, metrics_key, metrics_record
from worker.monitor.views import Outcome
from worker.monitor.windows import WindowKey, rolling_key

METRICS_SCHEMA = load_schema_json(SCHEMAS / "model_metrics.schema.json")
ALERT_SCHEMA = load_schema_json(SCHEMAS / "model_alert.schema.json")
FIVE = WindowKey("fraud", "1", "5m", T0 - T0 % 300_000)


def binary_agg() -> WindowAgg:
    outcomes = binary_outcomes(np.random.default_rng(0), 500)
    agg = add_outcomes(WindowAgg(), outcomes, BINARY)
    return add_predictions(agg, [o.prediction for o in outcomes], BINARY)


def record_of(agg: WindowAgg, key: WindowKey = FIVE, **kw: Any) -> dict[str, Any]:
    figures = metrics(agg, BINARY.reference if agg.task == "binary" else REGRESSION.reference)
    record = metrics_record(key, agg.task, figures, T0 + 1, **kw)
    return orjson.loads(orjson.dumps(record))  # type: ignore[no-any-return]


def test_binary_metrics_record_validates_and_carries_every_figure() -> None:
    record = record_of(binary_agg(), sources=4)
    assert schema_errors(record, METRICS_SCHEMA) == []
    assert record["window_end"] - record["window_start"] == 300_000
    assert record["count"] == 500 and record["predicted"] == 500 and record["coverage"] == 1.0
    assert record["roc_auc"] is not None and record["mae"] is None and record["sources"] == 4
    assert set(record) == set(METRICS_SCHEMA["required"])


@pytest.mark.parametrize("kind", ["empty", "regression", "multiclass", "rolling"])
def test_other_metrics_records_validate(kind: str) -> None:
    if kind == "empty":
        record = record_of(WindowAgg())
        assert record["task"] is None and record["count"] == 0 and record["accuracy"] is None
    elif kind == "regression":
        outs = [Outcome(prediction(i, float(i), float(i)), i + 1, T0, T0) for i in range(20)]
        record = record_of(add_outcomes(WindowAgg(), outs, REGRESSION), unmatched_labels=3)
        assert record["rmse"] == 1.0 and record["unmatched_labels"] == 3
    elif kind == "multiclass":
        outs = [Outcome(prediction(i, {"low": 0.2, "mid": 0.5, "high": 0.3}, "mid"),
                        "low", T0, T0) for i in range(5)]
        record = record_of(add_outcomes(WindowAgg(), outs, MULTICLASS))
        assert record["accuracy"] == 0.0 and record["positives"] is None
    else:
        record = record_of(binary_agg(), rolling_key("fraud", "1", T0))
        assert record["window"] == "rolling"
    assert schema_errors(record, METRICS_SCHEMA) == []


def test_records_that_break_the_contract_do_not_validate() -> None:
    record = record_of(binary_agg())
    for broken in ({**record, "recall": "high"}, {**record, "extra": 1},
                   {k: v for k, v in record.items() if k != "psi"},
                   {**record, "window": "5 minutes"}):
        assert schema_errors(broken, METRICS_SCHEMA) != []


def test_metrics_keys_let_a_compacted_topic_keep_the_latest() -> None:
    assert metrics_key(FIVE) == f"fraud|1|5m|{FIVE.start_ms}"
    assert metrics_key(rolling_key("fraud", "1", T0)) == "fraud|1|rolling"


def test_alert_records_validate() -> None:
    recall = next(r for r in DEFAULT_RULES if r.metric == "recall")
    figures = metrics(binary_agg())
    figures["recall"], figures["count"] = 0.2, 1000
    window = rolling_key("fraud", "1", T0)
    state, fired = evaluate(AlertState(), recall, figures, window, T0)
    figures["recall"] = 0.9
    _, resolved = evaluate(state, recall, figures, window, T0 + 60_000)
    for alert in (fired, resolved):
        assert alert is not None
        record = orjson.loads(orjson.dumps(alert_record(alert)))
        assert schema_errors(record, ALERT_SCHEMA) == []
        assert set(record) == set(ALERT_SCHEMA["required"])
        assert alert_key(alert) == "recall_low|fraud|1" and record["firing_since"] == T0
    assert schema_errors({**record, "status": "pending"}, ALERT_SCHEMA) != []
