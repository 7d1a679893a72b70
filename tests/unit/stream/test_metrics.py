"""/metrics, /healthz and /readyz over real HTTP, with a controllable clock."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from worker.probes import Health, serve
from worker.stream.metrics import WorkerMetrics


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_probes_follow_the_loop_and_the_assignment() -> None:
    now = [100.0]
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    health = Health(stall_s=10, clock=lambda: now[0], last_turn=100.0)
    server = serve(0, registry, health)
    port = server.server_address[1]
    try:
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 503  # nothing assigned yet
        health.model_loaded = health.broker_ok = True
        assert get(port, "/readyz")[0] == 503
        health.assigned = True
        assert get(port, "/readyz")[0] == 200
        now[0] = 111.0  # the loop has not turned for 11 s
        assert get(port, "/healthz")[0] == 503
        health.turned()
        assert get(port, "/healthz")[0] == 200
        metrics.dead_letters.labels("decode").inc(3)
        code, body = get(port, "/metrics")
        assert code == 200
        assert 'scoring_dead_letters_total{reason="decode"} 3.0' in body
        assert get(port, "/nope")[0] == 404
    finally:
        server.shutdown()


def test_bulk_histogram_matches_prometheus_histogram() -> None:
    import numpy as np
    from prometheus_client import Histogram, generate_latest

    from worker.stream.metrics import LATENCY_BUCKETS, BulkHistogram

    values = np.concatenate([np.random.default_rng(0).exponential(0.05, 5000),
                             np.array(LATENCY_BUCKETS), [0.0, 100.0]])
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    BulkHistogram("lat_seconds", "x", LATENCY_BUCKETS, ours).observe_many(values)
    reference = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=theirs)
    for v in values:
        reference.observe(float(v))

    def series(registry: CollectorRegistry) -> dict[str, float]:
        lines = generate_latest(registry).decode().splitlines()
        rows = [line.rsplit(" ", 1) for line in lines if line.startswith("lat_seconds_")
                and "_created" not in line]
        return {name: float(value) for name, value in rows}

    a, b = series(ours), series(theirs)
    assert a.keys() == b.keys()
    for name in a:
        assert abs(a[name] - b[name]) <= 1e-9 * max(1.0, abs(b[name])), name


def test_librdkafka_statistics_become_lag_rtt_and_queue_gauges() -> None:
    import orjson

    registry = CollectorRegistry()
    m = WorkerMetrics(registry)
    stats = {"topics": {"tx": {"partitions": {"0": {"consumer_lag": 12}, "1": {"consumer_lag": -1},
                                              "-1": {"consumer_lag": 5}}}},
             "brokers": {"127.0.0.1:9092/1": {"nodeid": 1, "rtt": {"avg": 2500}},
                         "127.0.0.1:9092/bootstrap": {"nodeid": -1,
                                                      "rtt": {"avg": 900}}}}
    m.consumer_stats(orjson.dumps(stats).decode())
    m.producer_stats(orjson.dumps({"msg_cnt": 7, "brokers": {}}).decode())

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return registry.get_sample_value(name, labels or {})

    assert value("scoring_consumer_lag_messages", {"topic": "tx", "partition": "0"}) == 12
    assert value("scoring_consumer_lag_messages", {"topic": "tx", "partition": "1"}) is None
    assert value("scoring_consumer_lag_messages", {"topic": "tx", "partition": "-1"}) is None
    assert value("scoring_kafka_broker_rtt_seconds", {"broker": "127.0.0.1:9092/1"}) == 0.0025
    assert value("scoring_kafka_broker_rtt_seconds",
                 {"broker": "127.0.0.1:9092/bootstrap"}) is None
    assert value("scoring_producer_queue_messages") == 7
    # partition 0 revoked: its series goes away instead of freezing at the last value
    m.consumer_stats(orjson.dumps({"topics": {"tx": {"partitions": {}}}}).decode())
    assert value("scoring_consumer_lag_messages", {"topic": "tx", "partition": "0"}) is None
