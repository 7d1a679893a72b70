"""Stage two: global windows from every source partition's latest partial.

One owner per (model, version) merges the partials, publishes each changed
window's figures, and on every tick the rolling view, the latest closed windows
(for gauges) and the alert rules. See ``stages.py`` for stage one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from worker.monitor.aggregate import WindowAgg
from worker.monitor.alerts import AlertRecord, AlertRule, AlertState, evaluate_all
from worker.monitor.catalog import metrics
from worker.monitor.estimate import window_details
from worker.monitor.figures import Figure
from worker.monitor.global_window import GlobalWindow, rolling_view
from worker.monitor.join import DELAY_BUCKETS_S, JoinStats
from worker.monitor.reasons import ReasonRow, reason_rows
from worker.monitor.records import alert_record, metrics_record
from worker.monitor.segments import (
    DEFAULT_SEGMENT_RULES,
    DEFAULT_TOP_K,
    SegmentFigures,
    SegmentRule,
    evaluate_segments,
    segment_figures,
)
from worker.monitor.stages import STATS_KEY, Changelog, dumps
from worker.monitor.views import ModelSpec
from worker.monitor.windows import ROLLING, ROLLING_STEP, WindowKey, parse_window, rolling_key

Record = tuple[str, bytes]  # (key, JSON value)


@dataclass
class Snapshot:
    """Figures for gauges: (model, version, window) -> metric name -> value."""

    figures: dict[tuple[str, str, str], dict[str, Figure]] = field(default_factory=dict)
    #: (model, version, window) -> the top K values of each segment field, and "other".
    segments: dict[tuple[str, str, str], list[SegmentFigures]] = field(default_factory=dict)
    #: (model, version, window) -> the top reasons behind its alerts (reasons.py).
    reasons: dict[tuple[str, str, str], list[ReasonRow]] = field(default_factory=dict)
    join: JoinStats = field(default_factory=JoinStats)
    invalid: int = 0


@dataclass
class GlobalPartition:
    partition: int
    windows: Sequence[str]
    spec_of: Callable[[str, str], ModelSpec | None]
    rules: Sequence[AlertRule]
    #: Windows this far behind ``now`` can no longer change (labels older than the
    #: horizon are not joined): dropped from memory and from the changelog.
    retain_ms: int
    global_windows: dict[WindowKey, GlobalWindow] = field(default_factory=dict)
    stats: dict[str, JoinStats] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    segment_rules: Sequence[SegmentRule] = DEFAULT_SEGMENT_RULES
    #: Segment values shown per field and window; the rest are merged as "__other__".
    segment_top_k: int = DEFAULT_TOP_K
    #: (model, version, window, start) of tumbling windows whose segments changed since
    #: the last tick: their segment rows are published then (as their own figures are
    #: when they change).
    segments_changed: set[tuple[str, str, str, int]] = field(default_factory=set)

    def restore(self, key: str, value: bytes | None) -> None:
        kind, _, rest = key.partition("|")
        if value is None:
            return
        data = orjson.loads(value)
        if kind == "g":
            self.global_windows[WindowKey.parse_key(rest)] = GlobalWindow.from_dict(data)
        elif kind == "t":
            self.stats[rest] = JoinStats.from_dict(data["stats"])
            self.invalid[rest] = int(data.get("invalid", 0))
        elif kind == "a":
            self.alerts[rest] = AlertState.from_dict(data)

    def apply(self, items: Sequence[tuple[str, dict[str, Any]]], now_ms: int
              ) -> tuple[Changelog, list[Record], bool]:
        """Fold partial messages; returns changelog, metric records, whether stats changed."""
        changes: Changelog = {}
        changed: set[WindowKey] = set()
        stats_changed = False
        for key, msg in items:
            source = str(msg["source"])
            if key == STATS_KEY:
                self.stats[source] = JoinStats.from_dict(msg["stats"])
                self.invalid[source] = int(msg.get("invalid", 0))
                changes[f"t|{source}"] = dumps(msg)
                stats_changed = True
                continue
            window = WindowKey.parse_key(msg["window"])
            held = self.global_windows.get(window, GlobalWindow())
            self.global_windows[window] = held.update(source, WindowAgg.from_dict(msg["agg"]))
            changed.add(window)
            if window.segment:
                self.segments_changed.add(
                    (window.model, window.model_version, window.window, window.start_ms))
        records = []
        for window in sorted(
            changed, key=lambda k: (k.model, k.model_version, k.window, k.start_ms)
        ):
            gw = self.global_windows[window]
            changes[f"g|{window.kafka_key()}"] = dumps(gw.to_dict())
            if window.window in self.windows and not window.segment:
                records.append(self._record(window, gw.merged(), now_ms, gw.sources))
        return changes, records, stats_changed

    def _record(self, window: WindowKey, agg: WindowAgg, now_ms: int, sources: int) -> Record:
        spec = self.spec_of(window.model, window.model_version)
        figures = metrics(agg, spec.reference if spec else None)
        value = metrics_record(window, agg.task, figures, now_ms, sources=sources,
                               details=window_details(agg))
        return window.kafka_key(), dumps(value)

    def closed_records(self, now_ms: int, since_ms: int) -> list[Record]:
        """The records of the configured windows held here that ended between ``since_ms``
        and ``now_ms``: after a restore, the status page's maturity curves of every window
        that can still change, however long ago it was published."""
        held = sorted((k for k in self.global_windows if k.window in self.windows
                       and since_ms <= k.end_ms <= now_ms),
                      key=lambda k: (k.model, k.model_version, k.window, k.start_ms))
        return [self._record(k, self.global_windows[k].merged(), now_ms,
                             self.global_windows[k].sources) for k in held]

    def join_stats(self) -> JoinStats:
        total = JoinStats()
        for stats in self.stats.values():
            total = total.merge(stats)
        return total

    def tick(self, now_ms: int) -> tuple[Changelog, list[Record], list[Record], Snapshot]:
        """Rolling views, latest closed windows and alerts as of ``now_ms``."""
        changes: Changelog = self._evict(now_ms)
        metric_records: list[Record] = []
        alert_records: list[AlertRecord] = []
        snap = Snapshot(join=self.join_stats(), invalid=sum(self.invalid.values()))
        for model, version in sorted({(k.model, k.model_version) for k in self.global_windows}):
            views = [self._rolling(model, version, now_ms), *self._closed(model, version, now_ms)]
            spec = self.spec_of(model, version)
            reference = spec.reference if spec else None
            for window, agg in views:
                figures = metrics(agg, reference)
                snap.figures[(model, version, window.window)] = figures
                if top := reason_rows(agg):
                    snap.reasons[(model, version, window.window)] = top
                self._alerts(evaluate_all(self.alerts, self.rules, figures, window, now_ms),
                             changes, alert_records)
                rows = segment_figures(self._segments(window, now_ms), self.segment_top_k,
                                       reference)
                if rows:
                    snap.segments[(model, version, window.window)] = rows
                    if window.window == ROLLING or (model, version, window.window,
                                                    window.start_ms) in self.segments_changed:
                        metric_records += segment_records(window, agg.task, rows, now_ms)
                self._alerts(evaluate_segments(self.alerts, self.segment_rules, rows,
                                               window, now_ms), changes, alert_records)
            window, agg = views[0]
            metric_records.append(
                (
                    window.kafka_key(),
                    dumps(
                        metrics_record(
                            window, agg.task, snap.figures[(model, version, "rolling")], now_ms,
                            details=window_details(agg),
                        )
                    ),
                )
            )
        self.segments_changed.clear()
        alerts = [(a.key(), dumps(alert_record(a))) for a in alert_records]
        return changes, metric_records, alerts, snap

    def _alerts(self, evaluated: tuple[dict[str, AlertState], list[AlertRecord]],
                changes: Changelog, records: list[AlertRecord]) -> None:
        states, fired = evaluated
        for key, state in states.items():
            if self.alerts.get(key) != state:
                changes[f"a|{key}"] = dumps(state.to_dict())
        self.alerts = states
        records.extend(fired)

    def _segments(self, view: WindowKey, now_ms: int) -> dict[str, WindowAgg]:
        """The merged aggregate of every segment of ``view`` (the rolling view: per
        segment, the merge of its buckets in the view)."""
        same = (view.model, view.model_version)
        if view.window != ROLLING:
            return {k.segment: gw.merged() for k, gw in self.global_windows.items()
                    if k.segment and (k.model, k.model_version) == same
                    and k.window == view.window and k.start_ms == view.start_ms}
        buckets: dict[str, dict[int, WindowAgg]] = {}
        for k, gw in self.global_windows.items():
            if k.segment and k.window == ROLLING_STEP and (k.model, k.model_version) == same:
                buckets.setdefault(k.segment, {})[k.start_ms] = gw.merged()
        views = {seg: rolling_view(b, now_ms) for seg, b in buckets.items()}
        return {seg: agg for seg, agg in views.items() if agg.total}

    def _rolling(self, model: str, version: str, now_ms: int) -> tuple[WindowKey, WindowAgg]:
        buckets = {
            k.start_ms: gw.merged()
            for k, gw in self.global_windows.items()
            if k.window == ROLLING_STEP and (k.model, k.model_version) == (model, version)
            and not k.segment
        }
        return rolling_key(model, version, now_ms), rolling_view(buckets, now_ms)

    def _closed(self, model: str, version: str, now_ms: int) -> list[tuple[WindowKey, WindowAgg]]:
        """The latest window of each configured size that has ended."""
        latest: dict[str, WindowKey] = {}
        for k in self.global_windows:
            if (k.model, k.model_version) != (model, version) or k.window not in self.windows \
                    or k.segment:
                continue
            if k.end_ms <= now_ms and (
                k.window not in latest or k.start_ms > latest[k.window].start_ms
            ):
                latest[k.window] = k
        return [(k, self.global_windows[k].merged()) for k in latest.values()]

    def _evict(self, now_ms: int) -> Changelog:
        old = [k for k in self.global_windows if k.end_ms + self.retain_ms < now_ms]
        for k in old:
            del self.global_windows[k]
        return {f"g|{k.kafka_key()}": None for k in old}


def segment_records(window: WindowKey, task: str, rows: Sequence[SegmentFigures],
                    now_ms: int) -> list[Record]:
    """The model-metrics records of a window's segment rows (the top K values of each field
    and ``__other__``): keyed ``...|field=value``, with ``segment`` naming it."""
    out = []
    for row in rows:
        where = replace(window, segment=f"{row.field}={row.value}")
        out.append((where.kafka_key(), dumps(metrics_record(where, task, row.figures, now_ms))))
    return out


def stats_record(snapshot_join: JoinStats, invalid: int, now_ms: int) -> bytes:
    """The join-stats record (schemas/join_stats.schema.json)."""
    counts = dict(snapshot_join.to_dict()["counts"])
    return dumps({"computed_at": now_ms, **counts, "invalid": invalid,
                  "label_delay_seconds": _delay_histogram(snapshot_join)})


def _delay_histogram(stats: JoinStats) -> dict[str, int]:
    counts = stats.to_dict()["delay_counts"]
    return {("+Inf" if b == float("inf") else str(int(b))): int(n)
            for b, n in zip(DELAY_BUCKETS_S, counts, strict=True)}


def window_sizes(windows: Sequence[str]) -> list[str]:
    """Configured windows plus the 5-minute step that the rolling view is made of."""
    for w in windows:
        parse_window(w)
    return list(dict.fromkeys([*windows, ROLLING_STEP]))
