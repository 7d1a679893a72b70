"""Each window metric is one catalog entry; the schema, the gauges' reference and the
aggregate's terms agree with it."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.helpers import ROOT, SCHEMAS
from tests.unit.monitor.gen import CALIBRATION, REFERENCE, prediction
from worker.monitor.aggregate import WindowAgg, add_outcomes, add_predictions
from worker.monitor.catalog import CATALOG, METRIC_NAMES, metrics
from worker.monitor.views import ModelSpec, Outcome

FIXED = {"model", "model_version", "window", "window_start", "window_end", "segment", "task",
         "computed_at", "unmatched_labels", "sources", "reliability", "maturity"}


def test_the_metrics_record_schema_has_exactly_the_catalog() -> None:
    schema = orjson.loads((SCHEMAS / "model_metrics.schema.json").read_bytes())
    props = schema["properties"]
    assert set(props) - FIXED == set(METRIC_NAMES)
    for m in CATALOG:
        kinds = props[m.name].get("type")
        # Counts are always integers; every other figure may be undefined (null).
        assert (kinds == "integer") if m.count else ("null" in kinds), m.name


def test_every_gauge_is_in_the_metrics_reference() -> None:
    reference = (ROOT / "docs" / "monitoring" / "metrics.md").read_text()
    missing = [m.gauge for m in CATALOG if m.gauge and m.gauge not in reference]
    assert missing == []


def sample_agg(task: str) -> WindowAgg:
    if task == "binary":
        spec = ModelSpec("binary", reference=REFERENCE, calibration=CALIBRATION)
        preds = [prediction(i, s, int(s >= 0.5)) for i, s in enumerate([0.1, 0.7, 0.4, 0.9])]
        truths = [0, 1, 1, 0]
    elif task == "multiclass":
        spec = ModelSpec("multiclass")
        preds = [prediction(i, {"a": 0.6, "b": 0.4}, "a") for i in range(3)]
        truths = ["a", "b", "a"]
    else:
        spec = ModelSpec("regression", reference=REFERENCE)
        preds = [prediction(i, float(i), float(i)) for i in range(3)]
        truths = [0.0, 1.5, 2.5]
    pairs = zip(preds, truths, strict=True)
    outcomes = [Outcome(p, y, p.scored_at, p.scored_at) for p, y in pairs]
    return add_outcomes(add_predictions(WindowAgg(), preds, spec), outcomes, spec)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_each_metric_reads_terms_the_aggregate_has(task: str) -> None:
    agg = sample_agg(task)
    produced = set(agg.counts) | set(agg.sums) | set(agg.hists)
    for m in CATALOG:
        if m.tasks is not None and task in m.tasks and m.name not in ("psi",):
            assert set(m.terms) <= produced, (m.name, set(m.terms) - produced)
    figures = metrics(agg, REFERENCE)
    defined = {name for name, value in figures.items() if value is not None}
    expected = {m.name for m in CATALOG if m.tasks is None or task in m.tasks}
    assert defined == expected
