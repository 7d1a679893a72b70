"""Alert rules: parsing, firing once, resolving, cooldown, no decision below min_count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from tests.unit.monitor.gen import T0
from worker.monitor.alerts import (
    DEFAULT_RULES,
    AlertRule,
    AlertRuleError,
    AlertState,
    alert_key,
    evaluate,
    evaluate_all,
    parse_rules,
)
from worker.monitor.catalog import METRIC_NAMES
from worker.monitor.figures import Figure
from worker.monitor.windows import WindowKey, rolling_key

RULE = AlertRule("recall_low", "recall", "<", 0.6, "rolling", min_count=200, cooldown_s=600)
WINDOW = rolling_key("fraud", "1", T0)
MIN = 60_000


def figures(recall: float | None, count: int = 1000, **more: Figure) -> dict[str, Figure]:
    out: dict[str, Figure] = dict.fromkeys(METRIC_NAMES)
    out.update({"recall": recall, "count": count, "predicted": count * 10, "coverage": 1.0,
                **more})
    return out


def run(
    values: Sequence[tuple[int, float | None]], rule: AlertRule = RULE
) -> list[tuple[int, str]]:
    """Evaluate at each (minute, recall); return (minute, status) of every record."""
    state = AlertState()
    out: list[tuple[int, str]] = []
    for minute, recall in values:
        state, record = evaluate(state, rule, figures(recall), WINDOW, T0 + minute * MIN)
        state = AlertState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        if record is not None:
            assert record.at == T0 + minute * MIN
            out.append((minute, record.status))
    return out


def test_fires_once_while_breached_then_resolves_once() -> None:
    seq = [(0, 0.9), (1, 0.5), (2, 0.4), (3, 0.55), (4, 0.7), (5, 0.8)]
    assert run(seq) == [(1, "firing"), (4, "resolved")]


def test_threshold_itself_is_not_a_breach() -> None:
    assert run([(0, 0.6)]) == [] and run([(0, 0.5999)]) == [(0, "firing")]


def test_cooldown_after_resolving_blocks_refiring_until_it_ends() -> None:
    seq = [(0, 0.5), (1, 0.7), (2, 0.5), (10, 0.5), (11, 0.5), (12, 0.5), (13, 0.9)]
    # Resolved at minute 1; cooldown 600 s ends at minute 11 exactly.
    assert run(seq) == [(0, "firing"), (1, "resolved"), (11, "firing"), (13, "resolved")]
    no_cooldown = AlertRule("r", "recall", "<", 0.6, cooldown_s=0)
    assert run([(0, 0.5), (1, 0.7), (1, 0.5)], no_cooldown) == [
        (0, "firing"), (1, "resolved"), (1, "firing")]


def test_no_decision_below_min_count_or_without_a_value() -> None:
    state, record = evaluate(AlertState(), RULE, figures(0.1, count=199), WINDOW, T0)
    assert record is None and state == AlertState()
    firing, record = evaluate(AlertState(), RULE, figures(0.1, count=200), WINDOW, T0)
    assert record is not None and firing.status == "firing"
    # A firing alert stays firing while nothing can be decided.
    for undecided in (figures(0.9, count=5), figures(None)):
        assert evaluate(firing, RULE, undecided, WINDOW, T0 + MIN) == (firing, None)


def test_psi_rules_count_predictions_not_labels() -> None:
    psi = next(r for r in DEFAULT_RULES if r.metric == "psi")
    assert psi.basis == "predicted" and psi.min_count == 500 and psi.op == ">"
    few_labels = figures(None, count=0, psi=0.4)
    few_labels["predicted"] = 500
    state, record = evaluate(AlertState(), psi, few_labels, WINDOW, T0)
    assert record is not None and record.basis_count == 500 and state.status == "firing"


def test_records_carry_the_episode() -> None:
    state, fired = evaluate(AlertState(), RULE, figures(0.3), WINDOW, T0)
    state, resolved = evaluate(state, RULE, figures(0.8), WINDOW, T0 + 5 * MIN)
    assert fired is not None and resolved is not None
    assert (fired.status, fired.since, fired.value) == ("firing", T0, 0.3)
    assert (resolved.status, resolved.since, resolved.at) == ("resolved", T0, T0 + 5 * MIN)
    assert state == AlertState("ok", None, T0 + 5 * MIN)
    assert resolved.key() == "recall_low|fraud|1" == alert_key("recall_low", "fraud", "1")
    assert alert_key("a|b", "m", "v") == "a%7Cb|m|v"


def test_evaluate_all_applies_the_rules_of_that_window_only() -> None:
    hourly = AlertRule("auc_hourly", "roc_auc", "<", 0.75, "1h", min_count=10)
    rules = (*DEFAULT_RULES, hourly)
    bad = figures(0.1, roc_auc=0.6, psi=0.5)
    states, records = evaluate_all({}, rules, bad, WINDOW, T0)
    assert sorted(r.rule.name for r in records) == ["psi_high", "recall_low", "roc_auc_low"]
    states, records = evaluate_all(states, rules, bad, WINDOW, T0 + MIN)
    assert records == [] and len(states) == 3
    hour = WindowKey("fraud", "1", "1h", T0 - T0 % 3_600_000)
    _, records = evaluate_all(states, rules, bad, hour, T0)
    assert [r.rule.name for r in records] == ["auc_hourly"]


def test_min_coverage_keeps_a_rule_quiet_until_the_window_is_labeled_enough() -> None:
    rule = AlertRule("recall_low", "recall", "<", 0.6, "rolling", min_count=10,
                     min_coverage=0.8)
    for coverage in (None, 0.5, 0.79):
        state, record = evaluate(AlertState(), rule, figures(0.1, coverage=coverage), WINDOW, T0)
        assert record is None and state == AlertState(), coverage
    _, record = evaluate(AlertState(), rule, figures(0.1, coverage=0.8), WINDOW, T0)
    assert record is not None and record.status == "firing"
    # The default rules on realized figures wait for 80 % coverage; PSI needs no label.
    by_metric = {r.metric: r.min_coverage for r in DEFAULT_RULES}
    assert by_metric == {"recall": 0.8, "roc_auc": 0.8, "psi": 0.0}


def test_rules_on_estimates_count_predictions_and_gaps_count_labels() -> None:
    est = AlertRule("est_recall_low", "est_recall", "<", 0.5, "rolling", min_count=100)
    gap = AlertRule("recall_gap", "est_gap_recall", "<", -0.1, "rolling", min_count=100)
    assert (est.basis, gap.basis) == ("predicted", "count")
    quiet = figures(None, count=10, est_recall=0.3, est_gap_recall=-0.3)  # 100 predicted
    assert evaluate(AlertState(), est, quiet, WINDOW, T0)[1] is not None
    assert evaluate(AlertState(), gap, quiet, WINDOW, T0)[1] is None


def test_parse_rules_with_defaults() -> None:
    rules = parse_rules([
        {"name": "recall_low", "metric": "recall", "op": "<", "threshold": 0.6},
        {"name": "psi", "metric": "psi", "op": ">", "threshold": 1, "window": "1h",
         "min_count": 500, "cooldown_s": 60},
    ])
    assert rules[0] == AlertRule("recall_low", "recall", "<", 0.6)
    assert rules[0].window == "rolling" and rules[0].min_count == 200
    assert rules[1].threshold == 1.0 and rules[1].cooldown_s == 60.0
    assert parse_rules([r.to_dict() for r in DEFAULT_RULES]) == DEFAULT_RULES


@pytest.mark.parametrize(("items", "message"), [
    ({"name": "x"}, "must be a list"),
    (["x"], "#1 must be a table"),
    ([{"metric": "recall", "op": "<", "threshold": 1}], "'name' is required"),
    ([{"name": "a", "metric": "recall", "op": "<"}], "rule 'a': 'threshold' is required"),
    ([{"name": "a", "metric": "rekall", "op": "<", "threshold": 1}], "unknown metric 'rekall'"),
    ([{"name": "a", "metric": "recall", "op": "<=", "threshold": 1}], "'op' must be"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": "1"}], "'threshold' must be"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": True}], "'threshold' must be"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1, "window": "1w"}],
     "bad window '1w'"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1, "min_count": -1}],
     "'min_count' must be"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1, "cooldown_s": -1}],
     "'cooldown_s' must not"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1, "min_coverage": 1.5}],
     "'min_coverage' must be in"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1, "min_coverage": "x"}],
     "'min_coverage' must be a finite"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1, "treshold": 2}],
     "unknown keys treshold"),
    ([{"name": "a", "metric": "recall", "op": "<", "threshold": 1}] * 2, "duplicate"),
])
def test_bad_rules_are_refused_with_a_clear_message(items: Any, message: str) -> None:
    with pytest.raises(AlertRuleError, match=message):
        parse_rules(items)


def test_alert_state_round_trip_and_validation() -> None:
    for state in (AlertState(), AlertState("firing", T0, None), AlertState("ok", None, T0)):
        assert AlertState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
    with pytest.raises(ValueError):
        AlertState.from_dict({"status": "pending"})
