"""The monitor's restore progress on /metrics: changelog records replayed, and the share
of the restores under way that is done (probes.RestoreProgress, which /healthz and
/readyz follow too)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.probes import RestoreProgress


class RestoreCollector(Collector):
    """Reads the progress at each scrape (a few ints the loop updates)."""

    def __init__(self, registry: CollectorRegistry, progress: RestoreProgress) -> None:
        self._progress = progress
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        p = self._progress
        yield CounterMetricFamily(
            "scoring_monitor_restored_records",
            "Changelog records replayed into the monitor's state since it started.",
            value=p.records)
        yield GaugeMetricFamily(
            "scoring_monitor_restore_done_ratio",
            "Share of the changelog restores under way that is done (1 when none runs); "
            "/readyz is 503 until they end, /healthz stays 200 while they move.",
            value=p.share())
        yield GaugeMetricFamily(
            "scoring_monitor_restores_running", "Changelog restores under way.",
            value=p.running)
