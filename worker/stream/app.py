"""``scoring-worker run``: build the worker from its settings, run it, shut it down.

The loop itself is worker/stream/runner.py; this module wires its parts: the scoring
context, metrics and probes, the consumer, the sink, hot reload. Every part can be
replaced from Python (``run_worker(settings, decoder=..., sink=...)``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from worker import kafka_io
from worker.config import Settings
from worker.context import build_context
from worker.core.decoders import Decoder
from worker.core.pipeline import ScoringContext
from worker.kafka_io import BatchConsumer
from worker.model.checked import library_mismatch, load_checked
from worker.probes import Health, serve
from worker.shutdown import STOP, StopFlag
from worker.stream import sinks
from worker.stream.alloc import keep_freed_memory
from worker.stream.metrics import WorkerMetrics
from worker.stream.reloader import Reloader, make_reloader
from worker.stream.runner import Runner, Totals
from worker.stream.sinks import Sink

log = logging.getLogger(__name__)


def broker_up(stats_json: str) -> bool:
    """Whether librdkafka's statistics show at least one broker connection up."""
    brokers = orjson.loads(stats_json).get("brokers", {}).values()
    return any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)


def run_worker(
    s: Settings,
    registry: CollectorRegistry | None = None,
    stop: StopFlag = STOP,
    *,
    decoder: Decoder | None = None,
    sink: Sink | None = None,
) -> Totals:
    """Build everything from settings, run until SIGTERM/SIGINT (or ``stop``), shut down
    cleanly. ``decoder`` and ``sink`` replace the JSON decoder and the Kafka sink."""
    keep_freed_memory()  # see worker/stream/alloc.py: batches re-use memory
    registry = registry or CollectorRegistry()
    metrics = WorkerMetrics(registry)
    health = Health(stall_s=s.health_stall_s)
    ctx = _context(s, metrics, decoder)
    shadow = None
    if s.shadow_model:
        second = load_checked(Path(s.shadow_model), allow_pickle=s.allow_pickle)
        shadow = replace(ctx, bundle=second)
    health.model_loaded = True
    server = serve(s.metrics_port, registry, health, s.metrics_host) if s.metrics_port else None
    try:
        kafka_io.wait_for_broker(s.bootstrap, s.start_timeout_s, extra=s.kafka,
                                 stop=lambda: stop.requested)  # fmt: skip
        health.broker_ok = True
        consumer = _consumer(s, metrics, health)
        sink = sink or sinks.build("kafka", s, metrics.producer_stats)
        reloader = make_reloader(s, ctx.bundle.version)
        runner = Runner(s, ctx, consumer, sink, metrics, health, reloader=reloader,
                        shadow=shadow, stop=stop)  # fmt: skip
        totals = _run(runner, reloader)
    finally:
        if server is not None:
            server.shutdown()
    log.info("stopped: %d consumed, %d scored, %d dead-lettered",
             totals.consumed, totals.scored, totals.dead_lettered)  # fmt: skip
    return totals


def _context(s: Settings, metrics: WorkerMetrics, decoder: Decoder | None) -> ScoringContext:
    ctx = replace(build_context(s), clock=time.perf_counter,
                  observe_model_seconds=metrics.model_seconds.observe)  # fmt: skip
    if decoder is not None:
        ctx = replace(ctx, decoder=decoder)
    man = ctx.bundle.manifest
    metrics.model_info.labels(man.name, man.version, man.sha256[:12],
                              library_mismatch(ctx.bundle)).set(1)  # fmt: skip
    log.info("model %s %s loaded from %s", man.name, man.version, ctx.bundle.path)
    return ctx


def _consumer(s: Settings, metrics: WorkerMetrics, health: Health) -> BatchConsumer:
    def on_change(kind: str, assigned: int) -> None:
        metrics.rebalances.labels(kind).inc()
        health.assigned = assigned > 0
        log.info("rebalance: %s, %d partitions assigned", kind, assigned)

    def consumer_stats(stats_json: str) -> None:
        metrics.consumer_stats(stats_json)
        health.broker_ok = broker_up(stats_json)

    stats = {"statistics.interval.ms": s.stats_interval_ms} if s.stats_interval_ms else {}
    conf = {**kafka_io.consumer_config(s), **stats, "stats_cb": consumer_stats}
    return BatchConsumer(conf, [s.input_topic], on_change)


def _run(runner: Runner, reloader: Reloader | None) -> Totals:
    try:
        if reloader is not None:
            reloader.start()
        return runner.run()
    finally:
        if reloader is not None:
            reloader.close()
