"""Alert rules on per-feature figures: by feature name, or for any feature (``"*"``).

A feature rule is evaluated as one alert rule per feature it applies to, named
``rule:feature`` (so the alert names the feature, and each feature has its own state,
``min_count`` and cooldown), with the state machine of worker/monitor/alerts.py.
``min_count`` counts the feature's values in the window, missing ones included.

The default data-quality rule fires when a feature's missing rate exceeds the
reference's by more than 0.05 (five points) in the rolling view, over 500 events at
least; the default drift rule when a feature's PSI exceeds 0.25 there.

A rule with ``segment`` watches the figures per segment value instead (the top K values of
each segment field and ``__other__``, worker/monitor/feature_segments.py): ``"*"`` every
segment row, ``"country"`` every row of that field, ``"country=FR"`` that one. It is
evaluated as ``rule:feature@field=value`` per feature and segment, and its record names both
(``feature`` and ``segment``). When a firing one's segment leaves the top K, it resolves
with the reason ``evicted``. The defaults watch the overall figures only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    firing_names,
    parse_tables,
    resolve_evicted,
)
from worker.monitor.drift import FEATURE_METRICS, FeatureFigures
from worker.monitor.feature_segments import SegmentFeatures
from worker.monitor.feature_windows import FeatureWindow
from worker.monitor.views import finite_number
from worker.monitor.windows import ROLLING, WindowKey, check_window

ANY: Final = "*"
DEFAULT_MIN_COUNT: Final = 500
_KEYS: Final = frozenset({"name", "feature", "metric", "op", "threshold", "window",
                          "min_count", "cooldown_s", "segment"})


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
    #: None: the overall figures; "*", a field or "field=value": per segment value.
    segment: str | None = None

    def applies_to(self, feature: str) -> bool:
        return self.feature in (ANY, feature)

    def applies_to_segment(self, row: SegmentFeatures) -> bool:
        return self.segment in (ANY, row.field, row.segment)

    def for_feature(self, feature: str, segment: str | None = None) -> AlertRule:
        name = f"{self.name}:{feature}" + ("" if segment is None else f"@{segment}")
        return AlertRule(name, self.metric, self.op, self.threshold, self.window,
                         self.min_count, self.cooldown_s)


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
    segment = item.get("segment")
    if segment is not None and (not isinstance(segment, str) or not segment
                                or segment.startswith("=")):
        raise AlertRuleError(f"{where}: 'segment' must be '*', a segment field or "
                             "field=value")
    return FeatureRule(name, feature, metric, op, threshold, window, min_count, cooldown,
                       segment)


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
    """Every rule of the window's size, on each feature it applies to: overall, or in
    each segment row it applies to (then resolving the firing ones of rows gone)."""
    new_states: dict[str, AlertState] = dict(states)
    alerts: list[FeatureAlert] = []
    key = WindowKey(window.model, window.model_version, window.window, window.start_ms)
    firing = firing_names(states, window.model, window.model_version)
    for rule in rules:
        if rule.window != window.window:
            continue
        if rule.segment is None:
            _evaluate(new_states, alerts, rule, window.features, key, None, now_ms)
            continue
        evaluated: set[str] = set()
        for row in window.segments:
            if rule.applies_to_segment(row):
                evaluated |= _evaluate(new_states, alerts, rule, row.features, key, row, now_ms)
        features = {f.name for f in window.features}
        gone: dict[str, tuple[str, str]] = {}
        for name in firing:
            feature, seg = _segment_of(name, rule.name, features)
            if name not in evaluated and seg is not None and rule.applies_to(feature) \
                    and rule.segment in (ANY, seg.partition("=")[0], seg):
                gone[name] = (feature, seg)
        segment_of = {n: seg for n, (_, seg) in gone.items()}
        resolved, records = resolve_evicted(
            new_states, [rule.for_feature(f, seg) for f, seg in gone.values()], key,
            segment_of.__getitem__, now_ms)
        new_states.update(resolved)
        alerts += [FeatureAlert(gone[r.rule.name][0], r) for r in records]
    return new_states, alerts


def _evaluate(states: dict[str, AlertState], alerts: list[FeatureAlert], rule: FeatureRule,
              features: tuple[FeatureFigures, ...], key: WindowKey,
              row: SegmentFeatures | None, now_ms: int) -> set[str]:
    """``rule`` on each of ``features`` it applies to; the names of the alerts evaluated."""
    names = set()
    where = key if row is None else replace(key, segment=row.segment)
    for figures in features:
        if not rule.applies_to(figures.name):
            continue
        concrete = rule.for_feature(figures.name, None if row is None else row.segment)
        names.add(concrete.name)
        values: dict[str, Any] = figures.to_dict()
        values["predicted"] = figures.count  # the basis of PSI-like figures, as "count"
        state_key = alert_key(concrete.name, key.model, key.model_version)
        states[state_key], record = evaluate(
            states.get(state_key, AlertState()), concrete, values, where, now_ms)
        if record is not None:
            alerts.append(FeatureAlert(figures.name, record))
    return names


def _segment_of(name: str, rule: str, features: set[str]) -> tuple[str, str | None]:
    """(feature, field=value) of a per-segment alert name ``rule:feature@field=value``
    (the longest feature that fits: a value may hold "@"); (name, None) otherwise."""
    prefix = f"{rule}:"
    if not name.startswith(prefix):
        return name, None
    rest = name[len(prefix):]
    fits = [f for f in features if rest.startswith(f"{f}@") and "=" in rest[len(f) + 1:]]
    if not fits:
        return name, None
    feature = max(fits, key=len)
    return feature, rest[len(feature) + 1:]
