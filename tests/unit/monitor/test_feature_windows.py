"""Per-feature windows from statistics records: exact sums of what the workers counted
(equal to a recount of the window's events), figures ranked by drift, feature alert
rules by name or for any feature, and drift off (with the reason) without a profile."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.unit.helpers import SCHEMAS
from worker.core.columns import build_columns
from worker.core.feature_counts import CountLayout
from worker.core.feature_stats import FeatureStats, StatsBuffer
from worker.model.feature_types import Feature
from worker.model.profile import Profile, profile_of
from worker.monitor.alerts import AlertRuleError
from worker.monitor.drift import feature_figures
from worker.monitor.feature_alerts import (
    DEFAULT_FEATURE_RULES,
    FeatureRule,
    evaluate_window,
    parse_feature_rules,
)
from worker.monitor.feature_stage import FeatureStage
from worker.monitor.feature_windows import NO_BUNDLE, NO_PROFILE, FeatureWindows
from worker.monitor.windows import ROLLING

SPECS = (Feature("amount", missing=True), Feature("country", "string", missing=True))
MINUTE = 60_000
T0 = 1_700_000_100_000 - 1_700_000_100_000 % (60 * MINUTE)  # an hour's start


def rows(rng: np.random.Generator, n: int, shift: float = 1.0, nulls: float = 0.0,
         new: bool = False) -> list[dict[str, Any]]:
    countries = ["de", "fr", "it", "zz"] if new else ["de", "fr", "it"]
    return [{"id": f"e{i}", "amount": float(rng.normal(50, 10) * shift),
             "country": None if rng.random() < nulls else str(rng.choice(countries))}
            for i in range(n)]


def reference(rng: np.random.Generator) -> Profile:
    frame = np.array([[r["amount"], r["country"]] for r in rows(rng, 4_000)], dtype=object)
    return profile_of(frame, SPECS)


def publish(profile: Profile, batches: list[tuple[int, str, list[dict[str, Any]]]],
            version: str = "1") -> list[FeatureStats]:
    """What workers publish: per worker, the batches' counts, taken per transaction."""
    layout, out = CountLayout.of(profile), []
    for at, worker, events in batches:
        buffer = StatsBuffer(worker, MINUTE)
        counts = layout.count(build_columns(events, SPECS)[0])
        buffer.add("fraud", version, profile.digest(), counts, len(events), at)
        out += buffer.take()
    return out


def test_a_window_is_the_exact_sum_and_its_figures_are_the_recounts() -> None:
    rng = np.random.default_rng(1)
    profile = reference(rng)
    batches = [(T0 + k * 20_000, f"w{k % 2}", rows(rng, 300)) for k in range(30)]  # 10 min
    windows = FeatureWindows(retain_ms=2 * 60 * MINUTE, profiles={("fraud", "1"): profile})
    for record in publish(profile, batches):
        windows.add(record)
    now = T0 + 9 * MINUTE
    first = windows.window(("fraud", "1"), "5m", T0 + 4 * MINUTE)
    assert first is not None and first.start_ms == T0
    inside = [e for at, _, events in batches if T0 <= at < T0 + 5 * MINUTE for e in events]
    recount = CountLayout.of(profile).count(build_columns(inside, SPECS)[0])
    assert first.rows == len(inside) == 15 * 300
    layout = CountLayout.of(profile)
    expected = {s.profile.name: feature_figures(s.profile, recount[s.start : s.stop])
                for s in layout.features}
    assert {f.name: f for f in first.features} == expected
    rolling = windows.window(("fraud", "1"), "rolling", now)
    assert rolling is not None and rolling.rows == 30 * 300
    windows.expire(T0 + 2 * 60 * MINUTE + 5 * MINUTE)
    assert windows.window(("fraud", "1"), "rolling", now).rows == 15 * 300  # type: ignore[union-attr]


def test_a_shift_ranks_its_feature_first_and_the_drift_rule_names_it() -> None:
    rng = np.random.default_rng(2)
    profile = reference(rng)
    windows = FeatureWindows(retain_ms=60 * MINUTE, profiles={("fraud", "1"): profile})
    for record in publish(profile, [(T0, "w", rows(rng, 1_000, shift=10.0))]):
        windows.add(record)
    w = windows.window(("fraud", "1"), "rolling", T0 + MINUTE)
    assert w is not None and [f.name for f in w.features] == ["amount", "country"]
    states, alerts = evaluate_window({}, DEFAULT_FEATURE_RULES, w, T0 + MINUTE)
    assert [(a.feature, a.record.rule.name) for a in alerts] == [
        ("amount", "feature_drift:amount")]
    assert w.features[0].out_of_range_rate == 1.0
    again, none = evaluate_window(states, DEFAULT_FEATURE_RULES, w, T0 + 2 * MINUTE)
    assert none == [] and again == states  # firing, not repeated


def test_nulls_raise_the_data_quality_rule_and_a_new_value_shows_as_unseen() -> None:
    rng = np.random.default_rng(3)
    profile = reference(rng)
    windows = FeatureWindows(retain_ms=60 * MINUTE, profiles={("fraud", "1"): profile})
    for record in publish(profile, [(T0, "w", rows(rng, 1_000, nulls=0.3, new=True))]):
        windows.add(record)
    w = windows.window(("fraud", "1"), "rolling", T0)
    assert w is not None
    country = next(f for f in w.features if f.name == "country")
    assert country.missing_rate == pytest.approx(0.3, abs=0.05)
    assert country.unseen_rate == pytest.approx(0.7 / 4, abs=0.05)
    _, alerts = evaluate_window({}, DEFAULT_FEATURE_RULES, w, T0)
    assert ("country", "feature_missing:country") in [(a.feature, a.record.rule.name)
                                                      for a in alerts]
    few = FeatureRule("x", "country", "missing_rate", ">", 0.1, min_count=5_000)
    assert evaluate_window({}, (few,), w, T0)[1] == []  # below min_count: undecided


def test_drift_is_off_with_a_reason_and_other_profiles_are_refused() -> None:
    rng = np.random.default_rng(4)
    profile = reference(rng)
    windows = FeatureWindows(
        retain_ms=MINUTE, profiles={("fraud", "2"): None},
        lookup=lambda key: profile if key == ("fraud", "3") else None)
    batch = [(T0, "w", rows(rng, 10))]
    for version in ("1", "2", "3"):
        for record in publish(profile, batch, version):
            windows.add(record)
    assert windows.off_reason("fraud", "1") == NO_BUNDLE
    assert windows.off_reason("fraud", "2") == NO_PROFILE
    assert windows.off_reason("fraud", "3") is None
    other = reference(np.random.default_rng(5))
    for record in publish(other, batch, "3"):
        windows.add(record)
    assert windows.refused == {"drift off": 2, "another profile": 1}
    assert [w.model_version for w in windows.windows(("rolling",), T0)] == ["3"]


def test_feature_rules_parse_strictly() -> None:
    rules = parse_feature_rules([{"name": "amount_psi", "feature": "amount", "metric": "psi",
                                  "op": ">", "threshold": 0.2, "window": "5m"}])
    assert rules[0].applies_to("amount") and not rules[0].applies_to("country")
    for bad, problem in (({"name": "a", "feature": "*", "metric": "recall", "op": ">",
                           "threshold": 1}, "unknown metric"),
                         ({"name": "a", "metric": "psi"}, "'feature' is required"),
                         ({"name": "a", "feature": "*", "metric": "psi", "op": ">",
                           "threshold": 1, "colour": 1}, "unknown keys")):
        with pytest.raises(AlertRuleError, match=problem):
            parse_feature_rules([bad])


def test_the_stage_restores_applies_ticks_and_its_alerts_follow_the_schema() -> None:
    rng = np.random.default_rng(6)
    profile = reference(rng)
    windows = FeatureWindows(retain_ms=60 * MINUTE, profiles={("fraud", "1"): profile})
    stage = FeatureStage(windows, DEFAULT_FEATURE_RULES, (ROLLING, "5m"))
    records = publish(profile, [(T0, "w", rows(rng, 1_000, shift=10.0))])
    stage.apply([(0, r.encode()) for r in records] + [(0, b"junk")])
    alerts = stage.tick(T0 + MINUTE)
    schema = orjson.loads((SCHEMAS / "model_alert.schema.json").read_bytes())
    assert [orjson.loads(v)["alert"] for _, v in alerts] == ["feature_drift:amount"]
    for key, value in alerts:
        record = orjson.loads(value)
        Draft202012Validator(schema).validate(record)
        assert record["feature"] == "amount" and key == b"feature_drift:amount|fraud|1"
    status = stage.status()
    assert stage.invalid == 1 and [w["window"] for w in status["windows"]] == [ROLLING, "5m"]
    top = status["windows"][0]["features"][0]
    assert top["feature"] == "amount" and len(top["psi_history"]) == 1
    stage.revoke(0)
    assert stage.tick(T0 + 2 * MINUTE) == [] and stage.status()["windows"] == []


def test_the_gauges_have_bounded_labels_and_say_why_drift_is_off() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from worker.monitor_app.features import FeatureCollector

    rng = np.random.default_rng(7)
    profile = reference(rng)
    windows = FeatureWindows(retain_ms=60 * MINUTE, profiles={("fraud", "1"): profile,
                                                              ("fraud", "2"): None})
    stage = FeatureStage(windows, DEFAULT_FEATURE_RULES, (ROLLING, "5m"))
    records = publish(profile, [(T0, "w", rows(rng, 100))])
    stage.apply([(0, r.encode()) for r in records])
    stage.apply([(0, r.encode()) for r in publish(profile, [(T0, "w", rows(rng, 5))], "2")])
    stage.tick(T0)
    registry = CollectorRegistry()
    FeatureCollector(registry).update(stage)
    text = generate_latest(registry).decode()
    assert 'scoring_feature_psi{feature="amount",model="fraud",model_version="1",' \
           'window="rolling"}' in text
    assert 'scoring_feature_values{feature="country",model="fraud",model_version="1",' \
           'window="5m"} 100.0' in text
    assert 'scoring_feature_drift_off{model="fraud",model_version="2",reason="no_profile"} 1.0' \
        in text
    assert 'scoring_feature_stats_refused_total{reason="drift_off"} 1.0' in text


def test_alert_states_survive_a_restart_through_their_changelog_records() -> None:
    """A rule firing before a restart is still firing after it (no second record); one
    that resolved keeps its cooldown; a revoked partition takes its states away."""
    rng = np.random.default_rng(8)
    profile = reference(rng)

    def stage() -> FeatureStage:
        windows = FeatureWindows(retain_ms=60 * MINUTE, profiles={("fraud", "1"): profile})
        return FeatureStage(windows, DEFAULT_FEATURE_RULES, (ROLLING,))

    drifted = publish(profile, [(T0, "w", rows(rng, 1_000, shift=10.0))])
    first = stage()
    first.apply([(2, r.encode()) for r in drifted])
    assert len(first.tick(T0 + MINUTE)) == 1
    changelog = {key: value for _, key, value in first.take_changes()}
    assert list(changelog) == [b"feature_drift:amount|fraud|1"] and not first.take_changes()
    second = stage()
    second.apply([(2, r.encode()) for r in drifted])  # the restore of the statistics
    for key, value in changelog.items():
        second.restore_state(2, key, value)
    assert second.tick(T0 + MINUTE + 500) == []  # still firing: no second record
    fresh = stage()
    fresh.apply([(2, r.encode()) for r in drifted])
    assert len(fresh.tick(T0 + MINUTE + 500)) == 1  # what a restart without them did
    # resolved: the cooldown (10 min by default) runs from the resolution, across a restart
    calm = publish(profile, [(T0 + m * MINUTE, "w", rows(rng, 4_000)) for m in (2, 3, 4)])
    second.apply([(2, r.encode()) for r in calm])
    assert [orjson.loads(v)["status"] for _, v in second.tick(T0 + 5 * MINUTE)] == ["resolved"]
    changelog.update({key: value for _, key, value in second.take_changes()})
    third = stage()
    third.apply([(2, r.encode()) for r in [*drifted, *calm, *drifted]])
    for key, value in changelog.items():
        third.restore_state(2, key, value)
        third.restore_state(5, key, value)  # another partition's read: not its model
    assert third.tick(T0 + 6 * MINUTE) == []  # drifted again, but cooling down
    assert third.states["feature_drift:amount|fraud|1"].resolved_at == T0 + 5 * MINUTE
    third.revoke(2)
    assert third.states == {} and third.take_changes() == []
