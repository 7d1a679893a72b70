"""The monitor's feature side in its shell: the statistics topic's partitions restored on
assignment, the pure stage (worker/monitor/feature_stage.py) fed and ticked, its gauges.

Gauges (labels model, model_version, window, feature; feature names come from the
bundles, windows from the settings, so the label sets are bounded): one per figure of
``drift.FEATURE_FIGURES``, for the rolling view and each window size as of the latest
tick. ``scoring_feature_drift_off`` is 1 per model version seen in statistics whose drift
is off, with the reason (``no_bundle`` or ``no_profile``);
``scoring_feature_stats_refused_total`` counts records not used, by reason.

Per segment value (``SEGMENT_GAUGES``: ``scoring_segment_feature_psi`` and
``scoring_segment_feature_missing_ratio``), labels model, model_version, window, feature,
field, segment: per model version and window at most features x (segment_top_k + 1) series
per segment field.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker import kafka_io
from worker.clock import wall_ms
from worker.kafka_io.changelog import read_changelog, read_since
from worker.kafka_io.config import Connection, connection
from worker.model.bundle import load_bundle
from worker.model.profile import Profile
from worker.monitor.drift import FEATURE_FIGURES
from worker.monitor.feature_alerts import FeatureRule
from worker.monitor.feature_stage import FeatureStage
from worker.monitor.feature_windows import NO_BUNDLE, FeatureWindow, FeatureWindows, ModelKey
from worker.monitor.segments import DEFAULT_TOP_K, DEFAULT_VALUES_MAX
from worker.monitor.windows import ROLLING, ROLLING_SPAN_MS, ROLLING_STEP_MS, parse_window
from worker.monitor_app.settings import MonitorSettings
from worker.probes import Route

log = logging.getLogger(__name__)
LABELS = ["model", "model_version", "window", "feature"]
#: The per-feature figures also exported per segment value (every figure is in
#: /api/features/segments): gauge name with "segment_feature" for "feature".
SEGMENT_GAUGES = ("psi", "missing_rate")


class FeatureCollector(Collector):
    """Exports the stage's latest windows; the loop replaces them, the HTTP thread reads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._windows: list[FeatureWindow] = []
        self._off: dict[ModelKey, str] = {}
        self._refused: dict[str, int] = {}
        registry.register(self)

    def update(self, stage: FeatureStage) -> None:
        with self._lock:
            self._windows = list(stage.latest)
            self._off = dict(stage.windows.off)
            self._refused = {**stage.windows.refused, "invalid": stage.invalid}

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            windows, off, refused = self._windows, self._off, self._refused
        for fig in FEATURE_FIGURES:
            fam = GaugeMetricFamily(fig.gauge, fig.help, labels=LABELS)
            for w in windows:
                for f in w.features:
                    value = getattr(f, fig.name)
                    if isinstance(value, int | float) and math.isfinite(value):
                        fam.add_metric([w.model, w.model_version, w.window, f.name],
                                       float(value))
            yield fam
        yield from _segment_gauges(windows)
        fam = GaugeMetricFamily("scoring_feature_drift_off",
                                "1 per model version whose feature drift is off, by reason.",
                                labels=["model", "model_version", "reason"])
        for (model, version), why in sorted(off.items()):
            fam.add_metric([model, version, "no_bundle" if why == NO_BUNDLE else "no_profile"], 1)
        yield fam
        counter = CounterMetricFamily("scoring_feature_stats_refused",
                                      "Feature statistics records not used, by reason.",
                                      labels=["reason"])
        for reason, n in sorted(refused.items()):
            counter.add_metric([reason.replace(" ", "_")], float(n))
        yield counter


def _segment_gauges(windows: list[FeatureWindow]) -> Iterable[Metric]:
    for fig in (f for f in FEATURE_FIGURES if f.name in SEGMENT_GAUGES):
        fam = GaugeMetricFamily(
            fig.gauge.replace("scoring_feature_", "scoring_segment_feature_", 1),
            f"{fig.help} Per value of a segment field (top K by traffic, and __other__).",
            labels=[*LABELS, "field", "segment"])
        for w in windows:
            for row in w.segments:
                for f in row.features:
                    value = getattr(f, fig.name)
                    if isinstance(value, int | float) and math.isfinite(value):
                        fam.add_metric([w.model, w.model_version, w.window, f.name,
                                        row.field, row.value], float(value))
        yield fam


@dataclass
class FeatureSide:
    """What the monitor's loop calls: assign/revoke a statistics partition, apply the
    polled records, tick (alert records to send)."""

    conn: Connection
    topic: str
    stage: FeatureStage
    collector: FeatureCollector
    clock_ms: Callable[[], int]
    #: The group's committed offset of a partition (the monitor's TxLoop.committed).
    committed: Callable[[str, int], int] = lambda topic, partition: -1
    #: The compacted changelog of the alert states ("": not kept) and its partition count:
    #: statistics partition p's states are in its partition p modulo that count.
    state_topic: str = ""
    state_partitions: int = 1

    @classmethod
    def build(cls, conn: Connection, topic: str, profiles: dict[ModelKey, Profile | None],
              rules: tuple[FeatureRule, ...], specs: tuple[str, ...], retain_ms: int,
              registry: CollectorRegistry, clock_ms: Callable[[], int],
              top_k: int = DEFAULT_TOP_K, values_max: int = DEFAULT_VALUES_MAX,
              ) -> FeatureSide:
        windows = FeatureWindows(retain_ms, profiles, top_k=top_k, values_max=values_max)
        return cls(conn, topic, FeatureStage(windows, rules, specs), FeatureCollector(registry),
                   clock_ms)

    def assign(self, partition: int) -> None:
        """Read back what the group already consumed of ``partition`` (within retention):
        the loop resumes at the committed offset, so every record counts once."""
        t0 = time.monotonic()
        end = self.committed(self.topic, partition)
        since = self.clock_ms() - self.stage.windows.retain_ms
        self.stage.apply((partition, v) for v in read_since(self.conn, self.topic, partition,
                                                             since, end))
        if self.state_topic:
            for key, value, _ in read_changelog(self.conn, self.state_topic,
                                                partition % self.state_partitions):
                self.stage.restore_state(partition, key, value)
        log.info("feature statistics %s[%d] restored up to offset %d in %.2fs",
                 self.topic, partition, end, time.monotonic() - t0)

    def revoke(self, partition: int) -> None:
        self.stage.revoke(partition)

    def apply(self, records: Iterable[tuple[int, bytes | None]]) -> None:
        self.stage.apply(records)

    def tick(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        alerts = self.stage.tick(now_ms)
        self.collector.update(self.stage)
        status, segments = orjson.dumps(self.stage.status()), orjson.dumps(
            self.stage.segments_status())
        with self._lock:
            self._status, self._segments = status, segments
        return alerts

    def state_records(self) -> list[tuple[int, bytes, bytes]]:
        """(changelog partition, key, value) of the alert states changed since the last
        call: the app writes them in the transaction that sends their alerts."""
        parts = self.stage.partition_of
        return [(parts.get(model, 0) % self.state_partitions, key, value)
                for model, key, value in self.stage.take_changes()]

    def routes(self) -> dict[str, Route]:
        """``/api/features``: the status page's features panel (FeatureStage.status);
        ``/api/features/segments``: the same per segment value (segments_status)."""
        return {"/api/features": lambda: (200, self._status, "application/json"),
                "/api/features/segments": lambda: (200, self._segments, "application/json")}

    _status: bytes = b'{"windows": [], "drift_off": []}'
    _segments: bytes = b'{"windows": []}'
    _lock: threading.Lock = field(default_factory=threading.Lock)


def load_profiles(paths: str, allow_pickle: bool = False) -> dict[ModelKey, Profile | None]:
    """Each given bundle's reference profile (None: it has none), by (name, version)."""
    out: dict[ModelKey, Profile | None] = {}
    for path in (p.strip() for p in paths.split(",") if p.strip()):
        man = load_bundle(Path(path), allow_pickle=allow_pickle).manifest
        out[(man.name, man.version)] = man.profile
    return out


def feature_side(s: MonitorSettings, rules: tuple[FeatureRule, ...],
                 registry: CollectorRegistry) -> FeatureSide | None:
    """The feature side when --feature-stats-topic is set: windows kept for the longest
    of the rolling view and the window sizes, plus one interval's slack."""
    if not s.feature_stats_topic:
        return None
    sizes = [parse_window(w) for w in s.window_list]
    retain = max([ROLLING_SPAN_MS, *sizes]) + ROLLING_STEP_MS
    return FeatureSide.build(connection(s, s.instance_id), s.feature_stats_topic,
                             load_profiles(s.models, s.allow_pickle), rules,
                             (ROLLING, *s.window_list), retain, registry, wall_ms,
                             s.segment_top_k, s.segment_values_max)


def feature_state_topic(s: MonitorSettings, partition_count: Callable[[str], int],
                        ) -> tuple[str, int]:
    """The feature alerts' changelog (compacted), created with as many partitions as the
    statistics topic has, and its partition count (the topic may be older)."""
    topic = s.internal.feature_state
    kafka_io.create_topics(s.bootstrap, {topic: partition_count(s.feature_stats_topic)},
                           config={"cleanup.policy": "compact"}, extra=s.kafka)
    return topic, partition_count(topic)
