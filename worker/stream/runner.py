"""The worker loop: consume what is buffered -> score -> produce, and let the delivery
guarantee commit; shutdown.

Each turn takes the events already buffered (up to ``batch_max``; it waits, up to
``batch_wait_ms``, only when there are none), scores them with one model call, and
queues their outputs without waiting for the broker. The guarantee
(worker/stream/alo.py or worker/stream/eos.py) tracks the acknowledgements and commits:
at-least-once, the offsets of events whose outputs were all acknowledged, in order;
exactly-once, a transaction holding outputs and offsets together. While outputs wait
(the in-flight bound, a transaction committing) the loop still turns at least every
``WAIT_S``, so /healthz stays 200 and readiness follows the broker.
Signal handlers only set a flag; the loop then settles what is in flight, commits,
closes the consumer (leaving the group) and returns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

import numpy as np

from worker.clock import wall_ms
from worker.config import Settings
from worker.core.feature_stats import StatsBuffer
from worker.core.pipeline import (
    Outcome,
    Prediction,
    ScoringContext,
    score_batch,
    score_with_shadow,
)
from worker.delivery_terms import PRODUCER_MAX_BYTES, Guarantee
from worker.errors import ConfigError, Rejection, RejectKind
from worker.kafka_io import BatchConsumer, Message
from worker.probes import Health
from worker.shutdown import StopFlag
from worker.stream.alo import AtLeastOnce
from worker.stream.delivery import Delivery, DeliveryGuarantee
from worker.stream.eos import ExactlyOnce
from worker.stream.metrics import WorkerMetrics
from worker.stream.outputs import (
    Kind,
    Output,
    PassedHeaders,
    RecordLimit,
    Rejecter,
    batch_outputs,
    shadow_outputs,
)
from worker.stream.passthrough import HeaderFilter, HeaderPassthrough, with_lineage
from worker.stream.reload import ReloadEvent
from worker.stream.schema_gate import SchemaGate
from worker.stream.sinks import Sink, TransactionalSink
from worker.stream.swap import apply_events, apply_shadow

log = logging.getLogger(__name__)
DEAD_LETTER_SUMMARY_S: Final = 60.0  # one summary line a minute, never a line per event
#: Longest the loop waits in one turn while it may not read (outputs wait for the broker).
WAIT_S: Final = 0.1
#: What the outputs accept when nobody checked the topics: librdkafka's message.max.bytes.
UNCHECKED_LIMIT: Final = RecordLimit(PRODUCER_MAX_BYTES,
                                     "the producer's default message.max.bytes")


@dataclass
class Totals:
    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    batches: int = 0


class ReloadSource(Protocol):
    def take(self) -> list[ReloadEvent]: ...


class Tracing(Protocol):
    """Spans of batches and the trace context of their outputs (worker/stream/otel.py)."""

    def begin(self, msgs: Sequence[Message], model: str, version: str) -> Any: ...

    def finish(self, batch: Any, msgs: Sequence[Message], outputs: list[Output],
               scored: int, dead_lettered: int) -> None: ...


@dataclass
class Runner:
    """One worker's loop over already-built clients; run_worker builds them."""

    settings: Settings
    ctx: ScoringContext
    consumer: BatchConsumer
    #: Where outputs go (worker/stream/sinks/); the Kafka producer unless told otherwise.
    sink: Sink
    metrics: WorkerMetrics
    health: Health
    clock_ms: Callable[[], int] = wall_ms
    totals: Totals = field(default_factory=Totals)
    stop: StopFlag = field(default_factory=StopFlag)
    #: Dead letters since the last summary line, by reason (logged once a minute).
    dead_since: Counter[str] = field(default_factory=Counter)
    last_summary: float = field(default_factory=time.monotonic)
    #: Checked bundles waiting to be swapped in between two batches (hot reload).
    reloader: ReloadSource | None = None
    #: The shadow model's context (--shadow-model), or None.
    shadow: ScoringContext | None = None
    #: The largest record every output topic accepts (the start-up check's finding).
    limit: RecordLimit = UNCHECKED_LIMIT
    #: Output topics that are compacted (they refuse records without a key).
    compacted: frozenset[str] = frozenset()
    #: Schema lookups of the wire formats (worker/stream/schema_gate.py), or None.
    gate: SchemaGate | None = None
    #: Batch spans and outputs' trace context (``tracing``), or None.
    tracing: Tracing | None = None
    #: Sends the outputs and handles refusals; the guarantee commits over it.
    delivery: Delivery = field(init=False)
    guarantee: DeliveryGuarantee = field(init=False)
    #: Picks the input headers the outputs carry (``pass_headers``), or None.
    passthrough: HeaderPassthrough | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s = self.settings
        rejecter = Rejecter(self.ctx.bundle, s.worker_id, self.limit, self.compacted)
        self.delivery = Delivery(settings=s, sink=self.sink, metrics=self.metrics,
                                 rejecter=rejecter, clock_ms=self.clock_ms)
        if s.feature_stats_topic:
            self.delivery.stats = StatsBuffer(s.worker_id, s.feature_stats_interval_ms,
                                              s.feature_stats_segment_values)
        if s.pass_headers:
            self.passthrough = HeaderPassthrough(HeaderFilter.parse(s.pass_header_names),
                                                 self.limit)
        self.guarantee = make_guarantee(s, self.delivery, self.consumer, self.health.turned)

    def request_stop(self) -> None:
        self.stop.requested = True

    @property
    def stopping(self) -> bool:
        return self.stop.requested

    def run(self) -> Totals:
        self.consumer.before_revoke = self.guarantee.revoke
        self.consumer.after_lost = self.guarantee.lost
        try:
            while not self.stopping:
                self.turn()
            self.guarantee.close(self.settings.flush_timeout_s)
        finally:
            self.consumer.close()
        return self.totals

    def turn(self) -> None:
        s, g = self.settings, self.guarantee
        if g.blocked():
            g.wait(WAIT_S)
            self.health.turned()
            return
        if self.reloader is not None and (events := self.reloader.take()):
            # Between two batches: a batch is scored by one version, start to end.
            self.ctx = apply_events(self.ctx, events, self.metrics, g.alert, s.worker_id)
            self.shadow = apply_shadow(self.shadow, self.ctx, events)
            self.delivery.new_model(self.ctx.bundle)
        wait_s = s.batch_wait_ms / 1000
        poll = partial(self.consumer.poll_batch, s.batch_max, wait_s)
        msgs = g.admit(poll() if self.gate is None else self.gate.take(poll, wait_s))
        self.health.turned()
        if msgs:
            self._process(msgs)
        g.tick(quiet=not msgs)

    def _process(self, msgs: list[Message]) -> None:
        s, g = self.settings, self.guarantee
        t0 = time.perf_counter()
        now = self.clock_ms()
        manifest = self.ctx.bundle.manifest
        span = None if self.tracing is None else self.tracing.begin(msgs, manifest.name,
                                                                    manifest.version)
        values = [m.value() for m in msgs]
        second = self.shadow
        # A shadow that became the served version has nothing left to compare.
        if second is not None and second.bundle.version == self.ctx.bundle.version:
            second = None
        count = self.delivery.stats is not None
        if second is None:
            scored, shadow = score_batch(values, self.ctx, now, count=count), None
        else:  # one decode for both models (worker/core/pipeline.py)
            scored, shadow = score_with_shadow(values, self.ctx, second, now, count=count)
        outcomes = scored.outcomes
        if s.lineage:
            outcomes = with_lineage(msgs, outcomes, self.ctx.encode)
            shadow = None if shadow is None else with_lineage(msgs, shadow, self.ctx.encode)
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        passed = None if self.passthrough is None else self.passthrough.picked(msgs)
        main = batch_outputs(msgs, outcomes, s.output_topic, s.dlq_topic,
                             self.delivery.rejecter, now, passed)
        outputs = main
        if shadow is not None:
            outputs = main + shadow_outputs(msgs, shadow, s.shadow_topic, passed)
        if passed is not None:
            self._headers_dropped(passed)
        if self.tracing is not None:
            scored_n = sum(1 for o in outcomes if type(o) is Prediction)
            self.tracing.finish(span, msgs, outputs, scored_n, len(msgs) - scored_n)
        g.publish(msgs, outputs)
        self.delivery.count_features(self.ctx, scored, now)
        self._account(msgs, outcomes, main)

    def _headers_dropped(self, passed: PassedHeaders) -> None:
        assert self.passthrough is not None
        if dropped := self.passthrough.count(passed):
            self.metrics.passed_headers_dropped.inc(dropped)
        if n := self.passthrough.summary_due(time.monotonic()):
            log.warning("%d records went without their passed headers: with them they would "
                        "exceed the %d-byte record limit (%s)", n, self.limit.bytes,
                        self.limit.source)

    def _account(self, msgs: Sequence[Message], outcomes: Sequence[Outcome],
                 outputs: Sequence[Output]) -> None:
        m, t = self.metrics, self.totals
        now_ms = self.clock_ms()
        reasons: Counter[str] = Counter()
        decisions: Counter[str] = Counter()
        stamps: list[int] = []
        for msg, o, out in zip(msgs, outcomes, outputs, strict=True):
            kind = out.kind
            if kind is Kind.PREDICTION:
                assert type(o) is Prediction
                stamps.append(msg.timestamp()[1])
                decisions[str(o.record["label"])] += 1
            elif kind is Kind.DEAD_LETTER:
                assert isinstance(o, Rejection)
                reasons[o.kind.value] += 1
            else:  # too large for the outputs: a fitted dead letter instead
                reasons[RejectKind.TOO_LARGE.value] += 1
        if stamps:
            lat = (now_ms - np.array(stamps, dtype=np.float64)) / 1000.0
            m.latency.observe_many(np.maximum(lat, 0.0))
        dead = sum(reasons.values())
        t.consumed += len(msgs)
        t.dead_lettered += dead
        t.scored += len(msgs) - dead
        t.batches += 1
        m.consumed.inc(len(msgs))
        m.scored.inc(len(msgs) - dead)
        m.batch_size.observe(len(msgs))
        for reason, n in reasons.items():
            m.dead_letters.labels(reason).inc(n)
        self._summarise(reasons)
        if self.ctx.bundle.manifest.task != "regression":
            for decision, n in decisions.items():
                m.predictions.labels(decision).inc(n)

    def _summarise(self, reasons: Counter[str]) -> None:
        self.dead_since.update(reasons)
        if self.dead_since and time.monotonic() - self.last_summary >= DEAD_LETTER_SUMMARY_S:
            log.warning("dead letters in the last %.0fs", time.monotonic() - self.last_summary,
                        extra={"dead_letters": dict(self.dead_since)})
            self.dead_since.clear()
            self.last_summary = time.monotonic()


def make_guarantee(s: Settings, delivery: Delivery, consumer: BatchConsumer,
                   heartbeat: Callable[[], None]) -> DeliveryGuarantee:
    """The settings' delivery guarantee over ``delivery`` and ``consumer``; ``heartbeat``
    is called while it waits for the broker."""
    if s.guarantee is Guarantee.EXACTLY_ONCE:
        sink = delivery.sink
        if not isinstance(sink, TransactionalSink):
            raise ConfigError("--guarantee exactly-once needs a transactional sink "
                              f"({type(sink).__name__} is not one)")
        return ExactlyOnce(delivery=delivery, sink=sink, consumer=consumer,
                           heartbeat=heartbeat)
    return AtLeastOnce(delivery=delivery, consumer=consumer, heartbeat=heartbeat)
