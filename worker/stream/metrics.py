"""The worker's Prometheus metrics, on an injected registry (served by worker/probes.py).

Names follow Prometheus conventions: base units, ``_total`` for counters,
``_seconds`` for durations. Label values are bounded (error kinds, decisions
of a classifier, partitions), never ids.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class BulkHistogram(Collector):
    """A histogram fed a whole batch at a time.

    prometheus_client's Histogram takes a lock per observation; at tens of
    thousands of events per second that is measurable, so per-event values
    (end-to-end latency) are bucketed with numpy once per batch instead.
    """

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.doc = name, doc
        self.bounds = np.array(buckets, dtype=np.float64)
        self.counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # last: +Inf
        self.total = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        idx = np.searchsorted(self.bounds, values, side="left")  # le semantics
        binned = np.bincount(idx, minlength=len(self.counts))
        with self._lock:
            self.counts += binned
            self.total += float(values.sum())

    def collect(self) -> list[Metric]:
        with self._lock:
            cumulative = np.cumsum(self.counts).tolist()
            total = self.total
        labels = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        fam = HistogramMetricFamily(self.name, self.doc,
                                    buckets=list(zip(labels, cumulative, strict=True)),
                                    sum_value=total)
        return [fam]


@dataclass
class WorkerMetrics:
    """Every metric the worker exports, registered on one registry."""

    registry: CollectorRegistry
    _lag_series: set[tuple[str, str]] = field(default_factory=set)
    consumed: Counter = field(init=False)
    scored: Counter = field(init=False)
    dead_letters: Counter = field(init=False)
    predictions: Counter = field(init=False)
    batch_size: Histogram = field(init=False)
    batch_seconds: Histogram = field(init=False)
    model_seconds: Histogram = field(init=False)
    latency: BulkHistogram = field(init=False)
    commits: Counter = field(init=False)
    commit_failures: Counter = field(init=False)
    rebalances: Counter = field(init=False)
    inflight: Gauge = field(init=False)
    last_commit: Gauge = field(init=False)
    model_info: Gauge = field(init=False)
    model_reloads: Counter = field(init=False)
    delivery_retries: Counter = field(init=False)
    outputs_dropped: Counter = field(init=False)
    transactions: Counter = field(init=False)
    lag: Gauge = field(init=False)
    broker_rtt: Gauge = field(init=False)
    producer_queue: Gauge = field(init=False)
    passed_headers_dropped: Counter = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=r)

        self.consumed = counter("scoring_events_consumed_total", "Events read from the input.")
        self.scored = counter("scoring_events_scored_total", "Events published as predictions.")
        self.dead_letters = counter("scoring_dead_letters_total",
                                    "Events sent to the dead-letter topic, by reason.",
                                    ("reason",))
        self.predictions = counter("scoring_predictions_total",
                                   "Predictions by decision (classifiers only).", ("decision",))
        self.batch_size = histogram("scoring_batch_size_events", "Events per consumed batch.",
                                    BATCH_BUCKETS)
        self.model_seconds = histogram("scoring_model_call_seconds",
                                       "One predict_proba/predict call on a batch (bisection "
                                       "after a model error included).", LATENCY_BUCKETS)
        self.batch_seconds = histogram("scoring_batch_score_seconds",
                                       "Decode, validation, features and the model call "
                                       "for one batch (the shadow model's too, when one is "
                                       "set).", LATENCY_BUCKETS)
        self.latency = BulkHistogram("scoring_end_to_end_latency_seconds",
                                     "Input event's Kafka timestamp to its prediction "
                                     "produced.", LATENCY_BUCKETS, r)
        self.commits = counter("scoring_commits_total", "Offset commits that succeeded.")
        self.commit_failures = counter("scoring_commit_failures_total", "Offset commits failed.")
        self.rebalances = counter("scoring_rebalances_total",
                                  "Partition assignment changes, by kind.", ("kind",))
        self.inflight = gauge("scoring_inflight_events",
                              "Events whose outputs wait for the broker (acknowledgement, or "
                              "exactly-once: the transaction's commit).")
        self.last_commit = gauge("scoring_last_commit_timestamp_seconds",
                                 "Unix time of the last successful commit.")
        self.model_info = gauge("scoring_model_info",
                                "The model being served; library_mismatch names the libraries "
                                "whose version differs from the bundle's (none: all match).",
                                ("model", "model_version", "sha256",
                                 "library_mismatch"))
        self.model_reloads = counter("scoring_model_reloads_total",
                                     "Hot model reloads, by result: ok or refused.",
                                     ("result",))
        self.passed_headers_dropped = counter(
            "scoring_passed_headers_dropped_total",
            "Outputs sent without the input headers pass_headers copies, because with them "
            "the record would exceed the outputs' size limit.")
        self.delivery_retries = counter("scoring_delivery_retries_total",
                                        "Messages produced again after a failed delivery.")
        self.outputs_dropped = counter("scoring_outputs_dropped_total",
                                       "Outputs given up on because the broker refused them for "
                                       "good even as a fitted dead letter, by kind.",
                                       ("kind",))
        self.transactions = counter("scoring_transactions_total",
                                    "Exactly-once transactions, by result: committed or aborted.",
                                    ("result",))
        self.lag = gauge("scoring_consumer_lag_messages",
                         "Messages behind the partition's end (librdkafka statistics).",
                         ("topic", "partition"))
        self.broker_rtt = gauge("scoring_kafka_broker_rtt_seconds",
                                "Mean broker round-trip time (librdkafka statistics).",
                                ("broker",))
        self.producer_queue = gauge("scoring_producer_queue_messages",
                                    "Messages waiting in the producer (librdkafka statistics).")

    def consumer_stats(self, stats_json: str) -> None:
        """librdkafka's statistics callback of the consumer: lag per owned partition."""
        stats = orjson.loads(stats_json)
        seen = set()
        for topic, t in stats.get("topics", {}).items():
            for part, p in t.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if part != "-1" and lag is not None and lag >= 0:
                    self.lag.labels(topic, part).set(lag)
                    seen.add((topic, part))
        for labels in list(self._lag_series - seen):  # partitions no longer ours
            self.lag.remove(*labels)
        self._lag_series = seen
        self._broker_stats(stats)

    def producer_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        self.producer_queue.set(stats.get("msg_cnt", 0))
        self._broker_stats(stats)

    def _broker_stats(self, stats: dict[str, Any]) -> None:
        for name, b in stats.get("brokers", {}).items():
            rtt = b.get("rtt", {}).get("avg", 0)
            if b.get("nodeid", -1) >= 0 and rtt > 0:  # skip bootstrap placeholders
                self.broker_rtt.labels(name).set(rtt / 1e6)
