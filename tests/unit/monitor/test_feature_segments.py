"""Per-feature figures per segment value: each segment row's counts are the exact sum of
what the workers counted for that value (a recount of its events), the top K values by
events and ``__other__`` (the rest, summed); a shift confined to one segment ranks its
feature first there only; a segment feature rule names the feature and the segment, and
resolves as evicted when the segment leaves the top K."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

from tests.unit.helpers import SCHEMAS
from tests.unit.monitor.test_feature_windows import MINUTE, SPECS, T0, reference, rows
from worker.core.columns import build_columns
from worker.core.feature_counts import CountLayout
from worker.core.feature_stats import FeatureStats, StatsBuffer
from worker.core.segment_counts import count_by_value
from worker.monitor.alerts import AlertRuleError
from worker.monitor.drift import feature_figures, ranked
from worker.monitor.feature_alerts import FeatureRule, evaluate_window, parse_feature_rules
from worker.monitor.feature_stage import FeatureStage
from worker.monitor.feature_windows import FeatureWindows
from worker.monitor.windows import ROLLING
from worker.monitor_app.features import FeatureCollector

MARKETS = ("DE", "FR", "IT")


def market_rows(rng: np.random.Generator, n: int, shifted: str | None) -> list[dict[str, Any]]:
    """Events with a market each (DE 50 %, FR 30 %, IT 20 %); ``shifted``'s amounts x10."""
    out = rows(rng, n)
    for e, k in zip(out, rng.choice(3, n, p=[0.5, 0.3, 0.2]).tolist(), strict=True):
        e["market"] = MARKETS[k]
        if e["market"] == shifted:
            e["amount"] *= 10
    return out


def publish(layout: CountLayout, digest: str, batches: list[tuple[int, str, list[Any]]]
            ) -> list[FeatureStats]:
    """Per worker, each batch counted overall and per market, through the wire form."""
    out = []
    for at, worker, events in batches:
        buffer = StatsBuffer(worker, MINUTE)
        columns = build_columns(events, SPECS)[0]
        seg = count_by_value(layout, columns, "market", [e["market"] for e in events])
        buffer.add("fraud", "1", digest, layout.count(columns), len(events), at, (seg,))
        out += [FeatureStats.decode(r.encode()) for r in buffer.take()]
    return out


@pytest.fixture
def windows() -> tuple[FeatureWindows, list[dict[str, Any]], CountLayout]:
    rng = np.random.default_rng(3)
    profile = reference(rng)
    layout = CountLayout.of(profile)
    batches = [(T0 + k * 30_000, f"w{k % 2}", market_rows(rng, 400, "FR")) for k in range(10)]
    held = FeatureWindows(retain_ms=2 * 60 * MINUTE, profiles={("fraud", "1"): profile},
                          top_k=2)
    for record in publish(layout, profile.digest(), batches):
        held.add(record)
    return held, [e for _, _, events in batches for e in events], layout


def test_segment_rows_are_exact_sums_top_k_and_other_and_the_shift_ranks_first_there(
    windows: tuple[FeatureWindows, list[dict[str, Any]], CountLayout],
) -> None:
    held, events, layout = windows
    window = held.window(("fraud", "1"), "5m", T0 + 5 * MINUTE - 1)
    assert window is not None
    by_value = {r.value: r for r in window.segments}
    assert list(by_value) == ["DE", "FR", "__other__"]  # top 2 by events, IT merged
    for value, mine in (("DE", ["DE"]), ("FR", ["FR"]), ("__other__", ["IT"])):
        subset = [e for e in events if e["market"] in mine]
        recount = layout.count(build_columns(subset, SPECS)[0])
        expected = ranked([feature_figures(s.profile, recount[s.start : s.stop])
                           for s in layout.features])
        assert by_value[value].rows == len(subset)
        assert list(by_value[value].features) == expected, value
    fr, de = by_value["FR"].features[0], {f.name: f for f in by_value["DE"].features}
    assert fr.name == "amount" and fr.psi is not None and fr.psi > 1.0
    assert de["amount"].psi is not None and de["amount"].psi < 0.1  # unshifted there
    stage = FeatureStage(held, ())
    stage.tick(T0 + 5 * MINUTE - 1)
    doc = stage.segments_status()
    rolling = [w for w in doc["windows"] if w["window"] == ROLLING]
    assert [r["segment"] for r in rolling[0]["rows"]] == ["DE", "FR", "__other__"]
    collector = FeatureCollector(CollectorRegistry())
    collector.update(stage)
    series = [s for m in collector.collect() if m.name == "scoring_segment_feature_psi"
              for s in m.samples]
    assert len(series) == 2 * 3 * 1  # features x (K + 1) x windows (rolling only)
    assert {s.labels["segment"] for s in series} == {"DE", "FR", "__other__"}


def test_a_segment_rule_names_feature_and_segment_and_resolves_when_evicted(
    windows: tuple[FeatureWindows, list[dict[str, Any]], CountLayout],
) -> None:
    held, _, _ = windows
    (rule,) = parse_feature_rules([{"name": "seg_drift", "feature": "*", "metric": "psi",
                                    "op": ">", "threshold": 0.25, "segment": "market",
                                    "min_count": 100, "window": "5m"}])
    assert rule.segment == "market"
    window = held.window(("fraud", "1"), "5m", T0 + 5 * MINUTE - 1)
    assert window is not None
    states, alerts = evaluate_window({}, (rule,), window, T0 + 5 * MINUTE)
    assert [(a.feature, a.record.rule.name, a.record.window.segment) for a in alerts] == [
        ("amount", "seg_drift:amount@market=FR", "market=FR")]
    (sent,) = FeatureStage(held, (rule,), specs=("5m",)).tick(T0 + 5 * MINUTE - 1)
    assert sent[0] == b"seg_drift:amount@market=FR|fraud|1"
    record = orjson.loads(sent[1])
    assert record["feature"] == "amount"
    assert record["segment"] == {"field": "market", "value": "FR"}
    Draft202012Validator(orjson.loads((SCHEMAS / "model_alert.schema.json").read_bytes())
                         ).validate(record)
    # FR leaves the top K: its alert resolves as evicted, naming both again
    gone = dataclasses.replace(window, segments=tuple(r for r in window.segments
                                                      if r.value != "FR"))
    states, alerts = evaluate_window(states, (rule,), gone, T0 + 5 * MINUTE + 1)
    assert [(a.feature, a.record.status, a.record.reason, a.record.window.segment)
            for a in alerts] == [("amount", "resolved", "evicted", "market=FR")]
    assert states["seg_drift:amount@market=FR|fraud|1"].status == "ok"
    overall = FeatureRule("all", "*", "psi", ">", 100.0, "5m")  # no segment: overall only
    assert evaluate_window({}, (overall,), window, T0)[1] == []
    exact = dataclasses.replace(rule, segment="market=DE")
    assert evaluate_window({}, (exact,), window, T0)[1] == []  # DE did not move
    with pytest.raises(AlertRuleError, match="'segment'"):
        parse_feature_rules([{"name": "x", "feature": "*", "metric": "psi", "op": ">",
                              "threshold": 1, "segment": ""}])


def test_a_field_of_many_values_is_capped_per_interval_into_other(
    windows: tuple[FeatureWindows, list[dict[str, Any]], CountLayout],
) -> None:
    held, _, layout = windows
    small = FeatureWindows(held.retain_ms, dict(held.profiles), top_k=50, values_max=2)
    profile = held.profiles[("fraud", "1")]
    assert profile is not None
    events = market_rows(np.random.default_rng(4), 300, None)
    for record in publish(layout, profile.digest(), [(T0, "w", events)]):
        small.add(record)
    window = small.window(("fraud", "1"), "5m", T0)
    assert window is not None
    by_value = {r.value: r.rows for r in window.segments}
    assert by_value == {"DE": sum(e["market"] == "DE" for e in events),
                        "FR": sum(e["market"] == "FR" for e in events),
                        "__other__": sum(e["market"] == "IT" for e in events)}
