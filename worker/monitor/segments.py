"""Figures per segment value: the keys, the cardinality cap, the ranking and the rules.

A prediction may carry ``segments`` (the worker's ``segment_fields``: field -> value).
The join carries them with the prediction (``codec.Pred``), and ``deltas.batch_deltas``
counts each outcome once for its model version and once per segment, under a
``WindowKey`` whose ``segment`` is ``field=value``. So a segment's window is a
``WindowAgg`` like any other: exact mergeable sums, merged across join partitions,
monitor instances and restarts by the same partials and changelogs.

Cardinality is bounded twice, deterministically:

- **Stage one** (``SegmentCap``): a join partition keeps at most ``values_max`` distinct
  values per window and field; later values of that window go to ``__other__``. The
  values a window has are read back from the store after a restart, so the cap decides
  alike however often the monitor restarts (first come by the partition's input order).
- **Stage two** (``ranked``): per window and field, the top K values by traffic
  (predictions, then labeled outcomes; ties by value) from the *merged* exact counts,
  the rest merged into ``__other__``. Decided afresh from the sums at every tick, so it
  does not depend on how the stream was split or in which order partials arrived.

Gauges therefore carry at most K + 1 values per field and window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Final, TypeVar

import orjson

from worker.core.records import OTHER_SEGMENT
from worker.model.manifest import ReferenceHistogram
from worker.monitor.aggregate import WindowAgg, merge_all
from worker.monitor.alerts import (
    DEFAULT_COOLDOWN_S,
    AlertRecord,
    AlertRule,
    AlertRuleError,
    AlertState,
    alert_key,
    evaluate,
    firing_names,
    parse_rule,
    parse_tables,
    resolve_evicted,
)
from worker.monitor.catalog import metrics
from worker.monitor.figures import Figure
from worker.monitor.windows import WindowKey

#: The merged values outside the top K (and a partition's values past ``values_max``).
OTHER: Final = OTHER_SEGMENT
ANY: Final = "*"
DEFAULT_TOP_K: Final = 20
DEFAULT_VALUES_MAX: Final = 500
DEFAULT_MIN_COUNT: Final = 500

#: The figures exported as gauges per segment value (scoring_segment_*, the catalog's
#: gauge names with "segment" for "model"); every catalog figure is in /api/segments.
GAUGE_METRICS: Final = ("predicted", "count", "coverage", "accuracy", "precision", "recall",
                        "f1", "roc_auc", "psi", "mae", "rmse")

Group = tuple[str, str, str, int, str]
"""model, version, window, start, field: one window's values of one field."""


@lru_cache(maxsize=4096)
def segment_names(text: str) -> tuple[str, ...]:
    """``field=value`` of each pair of ``records.read_segments``'s canonical text."""
    try:
        pairs = orjson.loads(text)
        return tuple(f"{f}={v}" for f, v in pairs if "=" not in f)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return ()


def split_segment(name: str) -> tuple[str, str]:
    """(field, value) of ``field=value`` (field names have no "=")."""
    field, _, value = name.partition("=")
    return field, value


class SegmentCap:
    """Stage one's bound: at most ``limit`` values per window and field in a partition.

    ``seed(group)`` lists the values the store already holds for a group (asked once per
    group and process), so a restarted partition admits exactly what it admitted before.
    """

    def __init__(self, limit: int, seed: Callable[[Group], Iterable[str]]) -> None:
        self.limit, self.seed = limit, seed
        self.groups: dict[Group, set[str]] = {}

    def admit(self, key: WindowKey) -> WindowKey:
        """``key`` itself, or its field's ``__other__`` when the window is full."""
        field, value = split_segment(key.segment)
        if value == OTHER:
            return key
        group = (key.model, key.model_version, key.window, key.start_ms, field)
        values = self.groups.get(group)
        if values is None:
            values = self.groups[group] = {v for v in self.seed(group) if v != OTHER}
        if value in values:
            return key
        if len(values) < self.limit:
            values.add(value)
            return key
        return replace(key, segment=f"{field}={OTHER}")

    def forget(self, key: WindowKey) -> None:
        """Drop the groups of a window gone past retention."""
        for group in [g for g in self.groups if g[:4] == (key.model, key.model_version,
                                                             key.window, key.start_ms)]:
            del self.groups[group]


def traffic(agg: WindowAgg) -> tuple[int, int]:
    return agg.counts.get("predicted", 0), agg.counts.get("count", 0)


def ranked(values: Mapping[str, WindowAgg], k: int) -> list[tuple[str, WindowAgg]]:
    """The top ``k`` values by traffic (ties: by value), then ``__other__``: the merge of
    the rest and of stage one's own ``__other__`` (absent when empty)."""
    return top_values(values, k, traffic, merge_all)


T = TypeVar("T")


def top_values(values: Mapping[str, T], k: int, size: Callable[[T], tuple[int, ...]],
               merge: Callable[[list[T]], T]) -> list[tuple[str, T]]:
    """The one cap of segment values, for every kind of figure: the top ``k`` values by
    ``size`` (descending; ties by value), then ``__other__``, the ``merge`` of the rest
    and of any ``__other__`` already in ``values`` (absent when there is none)."""
    real = sorted(((v, a) for v, a in values.items() if v != OTHER),
                  key=lambda va: (tuple(-n for n in size(va[1])), va[0]))
    rest = [a for _, a in real[k:]]
    if OTHER in values:
        rest.append(values[OTHER])
    return real[:k] + ([(OTHER, merge(rest))] if rest else [])


def by_field(aggs: Mapping[str, WindowAgg]) -> dict[str, dict[str, WindowAgg]]:
    """Segment windows (by ``field=value``) grouped by field."""
    out: dict[str, dict[str, WindowAgg]] = {}
    for name, agg in aggs.items():
        field, value = split_segment(name)
        out.setdefault(field, {})[value] = agg
    return out


@dataclass(frozen=True, slots=True)
class SegmentFigures:
    """One row of the segments table: a value's figures in one window."""

    field: str
    value: str
    figures: Mapping[str, Figure]


def segment_figures(aggs: Mapping[str, WindowAgg], k: int,
                    reference: ReferenceHistogram | None = None) -> list[SegmentFigures]:
    """Every field's top ``k`` values (and ``__other__``) with their figures."""
    out = []
    for field, values in sorted(by_field(aggs).items()):
        for value, agg in ranked(values, k):
            out.append(SegmentFigures(field, value, metrics(agg, reference)))
    return out


#: The figures of a segments table row (/api/segments and the status page).
TABLE_METRICS: Final = ("predicted", "count", "coverage", "positives", "accuracy",
                        "precision", "recall", "f1", "roc_auc", "psi", "mae", "rmse")


def segments_status(segments: Mapping[tuple[str, str, str], Sequence[SegmentFigures]]
                    ) -> dict[str, list[dict[str, object]]]:
    """``/api/segments``: per model version and window, the segment rows in order."""
    windows: list[dict[str, object]] = []
    for (model, version, window), rows in sorted(segments.items()):
        windows.append({"model": model, "model_version": version, "window": window,
                        "rows": [{"field": r.field, "segment": r.value,
                                  **{m: r.figures.get(m) for m in TABLE_METRICS}}
                                 for r in rows]})
    return {"windows": windows}


@dataclass(frozen=True, slots=True)
class SegmentRule:
    """An accuracy rule applied to each segment value of a field (``"*"``: any field)."""

    field: str
    rule: AlertRule

    @property
    def name(self) -> str:
        return self.rule.name

    def applies_to(self, field: str) -> bool:
        return self.field in (ANY, field)

    def for_segment(self, field: str, value: str) -> AlertRule:
        return replace(self.rule, name=f"{self.rule.name}:{field}={value}")


DEFAULT_SEGMENT_RULES: Final = (
    SegmentRule(ANY, AlertRule("segment_recall_low", "recall", "<", 0.2,
                               min_count=DEFAULT_MIN_COUNT, cooldown_s=DEFAULT_COOLDOWN_S,
                               min_coverage=0.8)),
)


def parse_segment_rules(items: object) -> tuple[SegmentRule, ...]:
    """Rules from ``[[segment_alerts]]`` tables: an ``[[alerts]]`` table plus ``field``
    (a segment field, or ``"*"``); ``min_count`` defaults to 500."""
    return parse_tables(items, _parse, "segment alert rule")


def _parse(item: object, index: int) -> SegmentRule:
    if not isinstance(item, Mapping):
        raise AlertRuleError(f"segment alert rule #{index + 1} must be a table")
    field = item.get("field")
    if not isinstance(field, str) or not field or "=" in field:
        raise AlertRuleError(f"segment alert rule #{index + 1}: 'field' must be a field "
                             "name (no '=') or '*'")
    rest = {k: v for k, v in item.items() if k != "field"}
    rest.setdefault("min_count", DEFAULT_MIN_COUNT)
    try:
        return SegmentRule(field, parse_rule(rest, index))
    except AlertRuleError as exc:
        raise AlertRuleError(f"segment {exc}") from None


def evaluate_segments(
    states: Mapping[str, AlertState],
    rules: Sequence[SegmentRule],
    rows: Sequence[SegmentFigures],
    window: WindowKey,
    now_ms: int,
) -> tuple[dict[str, AlertState], list[AlertRecord]]:
    """Every rule of ``window``'s size on each segment row it applies to. Each segment
    has its own state (``rule:field=value``); the record's window names the segment. A
    firing segment alert whose segment is not among ``rows`` any more (it left the top K)
    resolves with the reason ``evicted``."""
    new_states, records = dict(states), []
    firing = firing_names(states, window.model, window.model_version)
    for seg_rule in rules:
        if seg_rule.rule.window != window.window:
            continue
        evaluated = set()
        for row in rows:
            if not seg_rule.applies_to(row.field):
                continue
            rule = seg_rule.for_segment(row.field, row.value)
            evaluated.add(rule.name)
            key = alert_key(rule.name, window.model, window.model_version)
            where = replace(window, segment=f"{row.field}={row.value}")
            new_states[key], record = evaluate(states.get(key, AlertState()), rule,
                                               row.figures, where, now_ms)
            if record is not None:
                records.append(record)
        prefix = f"{seg_rule.name}:"
        gone = [replace(seg_rule.rule, name=n) for n in firing
                if n.startswith(prefix) and n not in evaluated and "=" in n[len(prefix):]
                and seg_rule.applies_to(split_segment(n[len(prefix):])[0])]
        new_states, evicted = resolve_evicted(new_states, gone, window,
                                              partial(_after, len(prefix)), now_ms)
        records += evicted
    return new_states, records


def _after(start: int, name: str) -> str:
    return name[start:]
