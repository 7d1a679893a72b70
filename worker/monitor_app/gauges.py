"""The monitor's Prometheus metrics: model figures per window, join counters, the loop.

Figures come from stage two's snapshot of every tick (the rolling view and the
latest closed window of each size, labels model, model_version, window); a
figure that is undefined (None) is left out rather than exported as NaN. Only
the instance owning a model version's partials exports its series, so several
instances never export conflicting values.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from worker.monitor.catalog import CATALOG
from worker.monitor.join import DELAY_BUCKETS_S
from worker.monitor.segments import GAUGE_METRICS
from worker.monitor.stage_global import Snapshot

#: figure name -> (metric name, help), from the catalog. Ratios and scores are unitless.
FIGURES: dict[str, tuple[str, str]] = {m.name: (m.gauge, m.help) for m in CATALOG if m.gauge}
#: The same per segment value: labels model, model_version, window, field, segment.
SEGMENT_FIGURES: dict[str, tuple[str, str]] = {
    m.name: (m.gauge.replace("scoring_model_", "scoring_segment_", 1),
             f"{m.help} Per value of a segment field (top K by traffic, and __other__).")
    for m in CATALOG if m.gauge and m.name in GAUGE_METRICS}
JOIN_COUNTERS = ("joined", "expired_predictions", "unmatched_labels", "duplicate_predictions",
                 "duplicate_labels", "predictions", "labels")


class MonitorCollector(Collector):
    """Exports the latest snapshot; the loop replaces it, the HTTP thread reads it."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time
                 ) -> None:
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self._clock = clock
        self._lag: dict[str, int] = {}
        self._newest_join_ms: int | None = None
        self._disk = self._state_memory = 0
        registry.register(self)

    def update(self, snap: Snapshot) -> None:
        with self._lock:
            self._snap = snap

    def progress(self, lag: Mapping[str, int], newest_join_ms: int | None,
                 state: tuple[int, int]) -> None:
        """Messages behind per input (predictions, labels), Kafka time of the newest
        record that completed a join, bytes of join state on disk and in RocksDB's memory."""
        with self._lock:
            self._lag = dict(lag)
            if newest_join_ms is not None:
                self._newest_join_ms = newest_join_ms
            self._disk, self._state_memory = state

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snap = self._snap
        for fig, (name, doc) in FIGURES.items():
            fam = GaugeMetricFamily(name, doc, labels=["model", "model_version", "window"])
            for (model, version, window), figures in sorted(snap.figures.items()):
                value = figures.get(fig)
                if isinstance(value, int | float) and math.isfinite(value):
                    fam.add_metric([model, version, window], float(value))
            yield fam
        yield from self._segments(snap)
        counts = snap.join.to_dict()["counts"]
        for name in JOIN_COUNTERS:
            yield CounterMetricFamily(f"scoring_monitor_{name}", f"Label join: {name}.",
                                      value=float(counts.get(name, 0)))
        yield CounterMetricFamily("scoring_monitor_invalid_messages",
                                  "Predictions or labels that could not be read.",
                                  value=float(snap.invalid))
        yield self._delays(snap)
        yield from self._progress()

    @staticmethod
    def _segments(snap: Snapshot) -> Iterable[Metric]:
        labels = ["model", "model_version", "window", "field", "segment"]
        for fig, (name, doc) in SEGMENT_FIGURES.items():
            fam = GaugeMetricFamily(name, doc, labels=labels)
            for (model, version, window), rows in sorted(snap.segments.items()):
                for row in rows:
                    value = row.figures.get(fig)
                    if isinstance(value, int | float) and math.isfinite(value):
                        fam.add_metric([model, version, window, row.field, row.value],
                                       float(value))
            yield fam

    def _progress(self) -> Iterable[Metric]:
        with self._lock:
            lag, newest = dict(self._lag), self._newest_join_ms
            disk, memory = self._disk, self._state_memory
        fam = GaugeMetricFamily("scoring_monitor_consumer_lag_messages",
                                "Messages the monitor is behind on its inputs (partitions "
                                "assigned to this instance).", labels=["input"])
        for role, n in sorted(lag.items()):
            fam.add_metric([role], float(n))
        yield fam
        age = GaugeMetricFamily(
            "scoring_monitor_newest_join_age_seconds",
            "Now minus the Kafka time of the newest prediction or label that completed a "
            "join here: how far behind the figures are.")
        if newest is not None:
            age.add_metric([], max(0.0, self._clock() - newest / 1000))
        yield age
        yield GaugeMetricFamily("scoring_monitor_state_disk_bytes",
                                "Bytes of join state (RocksDB) on local disk.", value=disk)
        yield GaugeMetricFamily("scoring_monitor_state_memory_bytes",
                                "Bytes of RocksDB's block cache and write buffers.",
                                value=memory)

    @staticmethod
    def _delays(snap: Snapshot) -> HistogramMetricFamily:
        counts = snap.join.to_dict()["delay_counts"]
        cumulative, buckets = 0, []
        for bound, n in zip(DELAY_BUCKETS_S, counts, strict=True):
            cumulative += int(n)
            buckets.append(("+Inf" if math.isinf(bound) else str(float(bound)), cumulative))
        # The join keeps bucket counts only, not the exact sum of delays.
        return HistogramMetricFamily("scoring_monitor_label_delay_seconds",
                                     "Label arrival minus the prediction's event time.",
                                     buckets=buckets, sum_value=math.nan)


@dataclass(frozen=True, slots=True)
class LoopCounters:
    """The monitor loop's own counters (the join's are in the snapshot)."""

    consumed: Counter  # labelled by topic role: source, join, partials
    transactions: Counter


def loop_counters(registry: CollectorRegistry) -> LoopCounters:
    consumed = Counter("scoring_monitor_messages_total", "Messages read, by topic role.",
                       ["role"], registry=registry)
    transactions = Counter(
        "scoring_monitor_transactions_total",
        "Batches committed as one Kafka transaction.",
        registry=registry,
    )
    return LoopCounters(consumed, transactions)
