"""Alert rules and their pure evaluator.

A rule compares one figure of one window with a threshold. State is kept per
(rule, model, model_version): an alert fires once when the figure crosses the
threshold, stays firing without repeating itself, resolves once when the figure
is back, and may not fire again within ``cooldown_s`` of resolving. Below
``min_count`` (labeled outcomes; predictions for prediction-based figures such as
PSI), below ``min_coverage`` (the window's label coverage: a realized figure of a
half-labeled window rests on the labels that came first, often not a fair sample) or
with an undefined figure, nothing is decided and the state is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, Protocol, TypeVar

from worker.core.records import escape_key_part, unescape_key_part
from worker.monitor.catalog import METRIC_NAMES, PREDICTION_METRICS
from worker.monitor.figures import Figure
from worker.monitor.views import finite_number
from worker.monitor.windows import ROLLING, WindowKey, check_window

Op = Literal["<", ">"]
Status = Literal["ok", "firing"]
DEFAULT_COOLDOWN_S: Final = 3600.0
DEFAULT_MIN_COUNT: Final = 200
#: The default rules on realized figures wait for this label coverage.
DEFAULT_MIN_COVERAGE: Final = 0.8
_RULE_KEYS: Final = frozenset(
    {"name", "metric", "op", "threshold", "window", "min_count", "cooldown_s", "min_coverage"}
)


class AlertRuleError(ValueError):
    """An alert rule definition is invalid; the message names the rule."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    metric: str
    op: Op
    threshold: float
    window: str = ROLLING
    min_count: int = DEFAULT_MIN_COUNT
    cooldown_s: float = DEFAULT_COOLDOWN_S
    #: In [0, 1]: the window's label coverage (labeled / predictions) it needs; 0: any.
    min_coverage: float = 0.0

    @property
    def basis(self) -> str:
        """The count that ``min_count`` applies to."""
        return "predicted" if self.metric in PREDICTION_METRICS else "count"

    def breached(self, value: float) -> bool:
        return value < self.threshold if self.op == "<" else value > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "op": self.op,
                "threshold": self.threshold, "window": self.window,
                "min_count": self.min_count, "cooldown_s": self.cooldown_s,
                "min_coverage": self.min_coverage}


DEFAULT_RULES: Final = (
    AlertRule("recall_low", "recall", "<", 0.6, ROLLING, min_count=200,
              min_coverage=DEFAULT_MIN_COVERAGE),
    AlertRule("roc_auc_low", "roc_auc", "<", 0.75, ROLLING, min_count=200,
              min_coverage=DEFAULT_MIN_COVERAGE),
    AlertRule("psi_high", "psi", ">", 0.25, ROLLING, min_count=500),
)


class Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=Named)


def parse_tables(items: object, parse_one: Callable[[object, int], R], what: str
                 ) -> tuple[R, ...]:
    """Rules from a list of TOML tables, each read by ``parse_one(item, index)``; their names
    unique. ``what`` names one rule in errors ("alert rule")."""
    if not isinstance(items, list | tuple):
        raise AlertRuleError(f"{what}s must be a list of tables")
    rules = tuple(parse_one(item, i) for i, item in enumerate(items))
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AlertRuleError(f"duplicate {what} names: {', '.join(duplicates)}")
    return rules


def parse_rules(items: object) -> tuple[AlertRule, ...]:
    """Rules from a list of tables, as in ``[[alerts]]`` of a TOML file."""
    return parse_tables(items, parse_rule, "alert rule")


def parse_rule(item: object, index: int) -> AlertRule:
    where = f"alert rule #{index + 1}"
    if not isinstance(item, Mapping):
        raise AlertRuleError(f"{where} must be a table")
    if isinstance(item.get("name"), str) and item["name"]:
        where = f"alert rule {item['name']!r}"
    unknown = sorted(set(map(str, item)) - _RULE_KEYS)
    if unknown:
        raise AlertRuleError(f"{where}: unknown keys {', '.join(unknown)}")
    for key in ("name", "metric", "op", "threshold"):
        if key not in item:
            raise AlertRuleError(f"{where}: {key!r} is required")
    name, metric, op = item["name"], item["metric"], item["op"]
    if not isinstance(name, str) or not name:
        raise AlertRuleError(f"{where}: 'name' must be a non-empty string")
    if metric not in METRIC_NAMES:
        raise AlertRuleError(f"{where}: unknown metric {metric!r}, expected one of "
                             f"{', '.join(METRIC_NAMES)}")
    if op not in ("<", ">"):
        raise AlertRuleError(f"{where}: 'op' must be '<' or '>', got {op!r}")
    threshold = _number(item["threshold"], where, "threshold")
    window = item.get("window", ROLLING)
    try:
        check_window(window)
    except ValueError as exc:
        raise AlertRuleError(f"{where}: {exc}") from None
    min_count = item.get("min_count", DEFAULT_MIN_COUNT)
    if type(min_count) is not int or min_count < 0:
        raise AlertRuleError(f"{where}: 'min_count' must be a non-negative integer")
    cooldown = _number(item.get("cooldown_s", DEFAULT_COOLDOWN_S), where, "cooldown_s")
    if cooldown < 0:
        raise AlertRuleError(f"{where}: 'cooldown_s' must not be negative")
    coverage = _number(item.get("min_coverage", 0.0), where, "min_coverage")
    if not 0.0 <= coverage <= 1.0:
        raise AlertRuleError(f"{where}: 'min_coverage' must be in [0, 1], got {coverage}")
    return AlertRule(name, metric, op, threshold, window, min_count, cooldown, coverage)


def _number(value: object, where: str, key: str) -> float:
    number = finite_number(value)
    if number is None:
        raise AlertRuleError(f"{where}: {key!r} must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class AlertState:
    """Per (rule, model, model_version). ``since``: when the current firing began;
    ``resolved_at``: when the last firing ended (the cooldown runs from there)."""

    status: Status = "ok"
    since: int | None = None
    resolved_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "since": self.since, "resolved_at": self.resolved_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertState:
        status = data.get("status", "ok")
        if status not in ("ok", "firing"):
            raise ValueError(f"unknown alert status {status!r}")
        since, resolved = data.get("since"), data.get("resolved_at")
        return cls(status, None if since is None else int(since),
                   None if resolved is None else int(resolved))


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A state change worth publishing: the rule started firing or resolved."""

    status: Literal["firing", "resolved"]
    rule: AlertRule
    window: WindowKey
    #: The figure at this evaluation; None when resolved for ``reason`` instead.
    value: float | None
    basis_count: int
    at: int
    since: int
    #: Why it resolved when not by its figure (``EVICTED``); None: by the figure.
    reason: str | None = None

    def key(self) -> str:
        return alert_key(self.rule.name, self.window.model, self.window.model_version)


#: A segment's alert resolved because the segment left the figures (the top K by traffic):
#: its figures are not evaluated any more, so its alert would otherwise fire for ever.
EVICTED: Final = "evicted"


def resolve_evicted(states: Mapping[str, AlertState], gone: Sequence[AlertRule],
                    window: WindowKey, segment_of: Callable[[str], str], now_ms: int,
                    ) -> tuple[dict[str, AlertState], list[AlertRecord]]:
    """Resolve each firing alert of ``gone`` (rules of segments no longer evaluated) with
    the reason ``EVICTED``; its record's window names the segment (``segment_of``)."""
    new_states, records = dict(states), []
    for rule in gone:
        key = alert_key(rule.name, window.model, window.model_version)
        state = states.get(key)
        if state is None or state.status != "firing":
            continue
        since = now_ms if state.since is None else state.since
        where = replace(window, segment=segment_of(rule.name))
        records.append(AlertRecord("resolved", rule, where, None, 0, now_ms, since, EVICTED))
        new_states[key] = AlertState("ok", None, now_ms)
    return new_states, records


def firing_names(states: Mapping[str, AlertState], model: str, version: str) -> list[str]:
    """The names of the alerts of ``model`` ``version`` that are firing."""
    out = []
    for key, state in states.items():
        if state.status == "firing":
            name, m, v = (unescape_key_part(p) for p in key.split("|"))
            if (m, v) == (model, version):
                out.append(name)
    return out


def alert_key(rule: str, model: str, model_version: str) -> str:
    """Key of the alert state and of its records: ``rule|model|version`` (escaped)."""
    return "|".join(escape_key_part(p) for p in (rule, model, model_version))


def evaluate(
    state: AlertState,
    rule: AlertRule,
    figures: Mapping[str, Figure],
    window: WindowKey,
    now_ms: int,
) -> tuple[AlertState, AlertRecord | None]:
    """One evaluation of ``rule`` on the figures of ``window`` at ``now_ms``."""
    value, basis = figures.get(rule.metric), figures.get(rule.basis)
    if value is None or not isinstance(basis, int) or basis < rule.min_count:
        return state, None
    coverage = figures.get("coverage")
    if rule.min_coverage > 0 and (coverage is None or coverage < rule.min_coverage):
        return state, None
    breached = rule.breached(float(value))
    if state.status == "firing":
        if breached:
            return state, None
        since = now_ms if state.since is None else state.since
        record = AlertRecord("resolved", rule, window, float(value), basis, now_ms, since)
        return AlertState("ok", None, now_ms), record
    if not breached or _cooling_down(state, rule, now_ms):
        return state, None
    record = AlertRecord("firing", rule, window, float(value), basis, now_ms, now_ms)
    return replace(state, status="firing", since=now_ms), record


def _cooling_down(state: AlertState, rule: AlertRule, now_ms: int) -> bool:
    if state.resolved_at is None:
        return False
    return now_ms < state.resolved_at + round(rule.cooldown_s * 1000)


def evaluate_all(
    states: Mapping[str, AlertState],
    rules: Sequence[AlertRule],
    figures: Mapping[str, Figure],
    window: WindowKey,
    now_ms: int,
) -> tuple[dict[str, AlertState], list[AlertRecord]]:
    """Every rule of ``window``'s size on one window's figures; states keyed by alert_key."""
    new_states, records = dict(states), []
    for rule in rules:
        if rule.window != window.window:
            continue
        key = alert_key(rule.name, window.model, window.model_version)
        new_states[key], record = evaluate(
            states.get(key, AlertState()), rule, figures, window, now_ms
        )
        if record is not None:
            records.append(record)
    return new_states, records
