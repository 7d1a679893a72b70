"""Alert rules on per-feature figures: by feature name, or for any feature (``"*"``).

A feature rule is evaluated as one alert rule per feature it applies to, named
``rule:feature`` (so the alert names the feature, and each feature has its own state,
``min_count`` and cooldown), with the state machine of worker/monitor/alerts.py.
``min_count`` counts the feature's values in the window, missing ones included.

The default data-quality rule fires when a feature's missing rate exceeds the
reference's by more than 0.05 (five points) in the rolling view, over 500 events at
least; the default drift rule when a feature's PSI exceeds 0.25 there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from worker.monitor.alerts import (
    DEFAULT_COOLDOWN_S,
    AlertRecord,
    AlertRule,
    AlertRuleError,
    AlertState,
    Op,
    alert_key,
    evaluate,
    parse_tables,
)
from worker.monitor.drift import FEATURE_METRICS
from worker.monitor.feature_windows import FeatureWindow
from worker.monitor.views import finite_number
from worker.monitor.windows import ROLLING, WindowKey, check_window

ANY: Final = "*"
DEFAULT_MIN_COUNT: Final = 500
_KEYS: Final = frozenset({"name", "feature", "metric", "op", "threshold", "window",
                          "min_count", "cooldown_s"})


@dataclass(frozen=True, slots=True)
class FeatureRule:
    name: str
    feature: str
    metric: str
    op: Op
    threshold: float
    window: str = ROLLING
    min_count: int = DEFAULT_MIN_COUNT
    cooldown_s: float = DEFAULT_COOLDOWN_S

    def applies_to(self, feature: str) -> bool:
        return self.feature in (ANY, feature)

    def for_feature(self, feature: str) -> AlertRule:
        return AlertRule(f"{self.name}:{feature}", self.metric, self.op, self.threshold,
                         self.window, self.min_count, self.cooldown_s)


DEFAULT_FEATURE_RULES: Final = (
    FeatureRule("feature_missing", ANY, "missing_rate_delta", ">", 0.05),
    FeatureRule("feature_drift", ANY, "psi", ">", 0.25),
)


@dataclass(frozen=True, slots=True)
class FeatureAlert:
    """An alert record of a feature rule, and the feature it names."""

    feature: str
    record: AlertRecord


def parse_feature_rules(items: object) -> tuple[FeatureRule, ...]:
    """Rules from ``[[feature_alerts]]`` tables of a TOML file."""
    return parse_tables(items, _parse, "feature alert rule")


def _parse(item: object, index: int) -> FeatureRule:
    where = f"feature alert rule #{index + 1}"
    if not isinstance(item, Mapping):
        raise AlertRuleError(f"{where} must be a table")
    unknown = sorted(set(map(str, item)) - _KEYS)
    if unknown:
        raise AlertRuleError(f"{where}: unknown keys {', '.join(unknown)}")
    missing = [k for k in ("name", "feature", "metric", "op", "threshold") if k not in item]
    if missing:
        raise AlertRuleError(f"{where}: {missing[0]!r} is required")
    name, feature, metric, op = item["name"], item["feature"], item["metric"], item["op"]
    if not isinstance(name, str) or not name or not isinstance(feature, str) or not feature:
        raise AlertRuleError(f"{where}: 'name' and 'feature' must be non-empty strings")
    if metric not in FEATURE_METRICS:
        raise AlertRuleError(f"{where}: unknown metric {metric!r}, expected one of "
                             f"{', '.join(FEATURE_METRICS)}")
    if op not in ("<", ">"):
        raise AlertRuleError(f"{where}: 'op' must be '<' or '>', got {op!r}")
    window = item.get("window", ROLLING)
    try:
        check_window(window)
    except ValueError as exc:
        raise AlertRuleError(f"{where}: {exc}") from None
    min_count = item.get("min_count", DEFAULT_MIN_COUNT)
    if type(min_count) is not int or min_count < 0:
        raise AlertRuleError(f"{where}: 'min_count' must be a non-negative integer")
    threshold = _number(item["threshold"], where, "threshold")
    cooldown = _number(item.get("cooldown_s", DEFAULT_COOLDOWN_S), where, "cooldown_s")
    if cooldown < 0:
        raise AlertRuleError(f"{where}: 'cooldown_s' must not be negative")
    return FeatureRule(name, feature, metric, op, threshold, window, min_count, cooldown)


def _number(value: object, where: str, key: str) -> float:
    number = finite_number(value)
    if number is None:
        raise AlertRuleError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return number


def evaluate_window(
    states: Mapping[str, AlertState],
    rules: tuple[FeatureRule, ...],
    window: FeatureWindow,
    now_ms: int,
) -> tuple[dict[str, AlertState], list[FeatureAlert]]:
    """Every rule of the window's size, on each feature it applies to."""
    new_states, alerts = dict(states), []
    key = WindowKey(window.model, window.model_version, window.window, window.start_ms)
    for rule in rules:
        if rule.window != window.window:
            continue
        for figures in window.features:
            if not rule.applies_to(figures.name):
                continue
            concrete = rule.for_feature(figures.name)
            values: dict[str, Any] = figures.to_dict()
            values["predicted"] = figures.count  # the basis of PSI-like figures, as "count"
            state_key = alert_key(concrete.name, window.model, window.model_version)
            new_states[state_key], record = evaluate(
                states.get(state_key, AlertState()), concrete, values, key, now_ms)
            if record is not None:
                alerts.append(FeatureAlert(figures.name, record))
    return new_states, alerts
