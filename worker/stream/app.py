"""``scoring-worker run``: build the worker from its settings, run it, shut it down.

The loop itself is worker/stream/runner.py; this module wires its parts: the scoring
context, metrics and probes, the consumer, the sink, hot reload. Every part can be
replaced from Python (``run_worker(settings, decoder=..., sink=...)``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

import orjson
from prometheus_client import CollectorRegistry

from worker import kafka_io
from worker.config import Settings
from worker.context import build_context
from worker.core import decoders
from worker.core.decoders import Decoder
from worker.core.pipeline import ScoringContext
from worker.delivery_terms import PRODUCER_MAX_BYTES
from worker.errors import ConfigError
from worker.kafka_io import BatchConsumer
from worker.kafka_io.config import connection
from worker.kafka_io.limits import topic_rules
from worker.kafka_io.watch import BrokerWatch, quiet_transport_lines
from worker.model.checked import library_mismatch, load_checked
from worker.probes import Health, WatchedHealth, serve
from worker.shutdown import STOP, StopFlag
from worker.stream import output_format, schema_gate, sinks
from worker.stream.alloc import keep_freed_memory
from worker.stream.child_report import start_reporting
from worker.stream.metrics import WorkerMetrics
from worker.stream.outputs import RecordLimit, record_limit
from worker.stream.reloader import Watcher, make_reloader
from worker.stream.runner import UNCHECKED_LIMIT, Runner, Totals, Tracing
from worker.stream.sinks import Sink, SinkHooks
from worker.tracing_extra import missing_extra
from worker.wire_settings import InputFormat

#: The cyclic collector's thresholds while the loop runs (Python's: 700, 10, 10). A batch
#: keeps several containers per event alive until its outputs are acknowledged (decoded
#: events, prediction records, outputs, their delivery callbacks), so at 700 the collector
#: ran a few times per batch and moved each batch's objects into the older generations,
#: whose passes then rescanned every event in flight. Freed by reference counting, nearly
#: all of them are gone before a young generation of 20,000 fills up.
GC_THRESHOLDS: Final = (20_000, 10, 10)

log = logging.getLogger(__name__)


def run_worker(
    s: Settings,
    registry: CollectorRegistry | None = None,
    stop: StopFlag = STOP,
    *,
    decoder: Decoder | None = None,
    sink: Sink | None = None,
    report_fd: int | None = None,
) -> Totals:
    """Build everything from settings, run until SIGTERM/SIGINT (or ``stop``), shut down
    cleanly. ``decoder`` and ``sink`` replace the JSON decoder and the Kafka sink.
    ``report_fd``: a process of ``run --processes N`` reports its probes there."""
    keep_freed_memory()  # see worker/stream/alloc.py: batches re-use memory
    registry = registry or CollectorRegistry()
    metrics = WorkerMetrics(registry)
    watch = _watch()
    health = WatchedHealth(stall_s=s.health_stall_s, watch=watch)
    make_tracing = tracing_type(s)
    ctx = replace(_context(s, metrics, decoder), encode=output_format.build_encoder(s))
    shadow = None
    if s.shadow_model:
        second = load_checked(Path(s.shadow_model), allow_pickle=s.allow_pickle,
                              threads=s.model_threads)
        shadow = replace(ctx, bundle=second, explain=0)  # reasons: the served model's
    health.model_loaded = True
    gate = schema_gate.build(s, ctx.decoder, health)
    server = serve(s.metrics_port, registry, health, s.metrics_host) if s.metrics_port else None
    if report_fd is not None:
        start_reporting(report_fd, health, stop)
    try:
        kafka_io.wait_for_broker(s.bootstrap, s.start_timeout_s, extra=s.kafka,
                                 stop=lambda: stop.requested)
        health.broker_ok = True
        limit, compacted = _output_rules(s) if sink is None else (UNCHECKED_LIMIT, frozenset())
        consumer = _consumer(s, metrics, health, watch)
        hooks = SinkHooks(_stats_sink(s, "producer", metrics.producer_stats, watch),
                          watch, limit.bytes)
        sink = sink or sinks.build("kafka", s, hooks)
        reloader = make_reloader(s, ctx.bundle.version)
        tracing = None if make_tracing is None else make_tracing(s.input_topic, limit)
        runner = Runner(s, ctx, consumer, sink, metrics, health, reloader=reloader,
                        shadow=shadow, stop=stop, limit=limit, compacted=compacted,
                        gate=gate, tracing=tracing)
        # Modules and the model live as long as the process: keep them out of the cyclic
        # collector's full passes, which would otherwise rescan them again and again.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        totals = _run(runner, reloader)
    finally:
        if server is not None:
            server.shutdown()
    log.info("stopped: %d consumed, %d scored, %d dead-lettered",
             totals.consumed, totals.scored, totals.dead_lettered)
    return totals


def tracing_type(s: Settings) -> Callable[[str, RecordLimit], Tracing] | None:
    """The OpenTelemetry tracing class when ``tracing`` is on (imported only then)."""
    if not s.tracing:
        return None
    try:
        from worker.stream.otel import OtelTracing
    except ImportError as exc:
        raise missing_extra(exc) from None
    return OtelTracing


def _output_rules(s: Settings) -> tuple[RecordLimit, frozenset[str]]:
    """What the producer and every output topic accept (refusing inconsistent limits),
    and which output topics are compacted."""
    producer_max = int(s.kafka.get("message.max.bytes", PRODUCER_MAX_BYTES))
    topics = [s.output_topic, s.dlq_topic, *([s.shadow_topic] if s.shadow_model else [])]
    rules = topic_rules(connection(s), topics)
    limit = record_limit(producer_max, {t: r.max_bytes for t, r in rules.items()},
                         s.max_event_bytes)
    log.info("outputs accept records up to %d bytes (%s); events above max_event_bytes %d "
             "are dead-lettered unread", limit.bytes, limit.source, s.max_event_bytes)
    compacted = frozenset(t for t, r in rules.items() if r.compacted)
    if compacted:
        log.warning("output topics %s are compacted: outputs without a key cannot go there "
                    "(keyless predictions become dead letters)", sorted(compacted))
    return limit, compacted


def _watch() -> BrokerWatch:
    quiet_transport_lines()  # one line per state change instead (BrokerWatch)
    return BrokerWatch()


def _stats_sink(s: Settings, client: str, to_metrics: Callable[[str], None],
                watch: BrokerWatch) -> Callable[[str], None]:
    """A client's statistics callback: readiness every time (each second), /metrics every
    ``stats_interval_ms`` (0: never)."""
    every = s.stats_interval_ms / 1000
    last = [float("-inf")]

    def on_stats(stats_json: str) -> None:
        watch.stats(client, orjson.loads(stats_json))
        now = time.monotonic()
        if every and now - last[0] >= every:
            last[0] = now
            to_metrics(stats_json)

    return on_stats


def _context(s: Settings, metrics: WorkerMetrics, decoder: Decoder | None) -> ScoringContext:
    ctx = replace(build_context(s), clock=time.perf_counter,
                  observe_model_seconds=metrics.model_seconds.observe)
    if decoder is None and s.input_format != InputFormat.JSON:
        try:
            decoder = decoders.get(str(s.input_format))
        except ValueError as exc:
            raise ConfigError(f"--input-format {s.input_format}: {exc}") from None
    if decoder is not None:
        ctx = replace(ctx, decoder=decoder)
    man = ctx.bundle.manifest
    metrics.model_info.labels(man.name, man.version, man.sha256[:12],
                              library_mismatch(ctx.bundle)).set(1)
    log.info("model %s %s loaded from %s", man.name, man.version, ctx.bundle.path)
    return ctx


def _consumer(s: Settings, metrics: WorkerMetrics, health: Health,
              watch: BrokerWatch) -> BatchConsumer:
    def on_change(kind: str, assigned: int) -> None:
        metrics.rebalances.labels(kind).inc()
        health.assigned = assigned > 0
        log.info("rebalance: %s, %d partitions assigned", kind, assigned)

    stats = _stats_sink(s, "consumer", metrics.consumer_stats, watch)
    conf = {**kafka_io.consumer_config(s), "stats_cb": stats}
    return BatchConsumer(conf, [s.input_topic], on_change, watch)


def _run(runner: Runner, reloader: Watcher | None) -> Totals:
    try:
        if reloader is not None:
            reloader.start()
        return runner.run()
    finally:
        if reloader is not None:
            reloader.close()
