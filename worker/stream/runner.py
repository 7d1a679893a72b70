"""The worker loop: consume a batch -> score -> produce -> flush -> commit, and shutdown.

At-least-once: a batch's offsets are committed only after every prediction
and dead letter of that batch has been acknowledged by the broker. A crash
anywhere before the commit means the batch is read again, never lost.
Signal handlers only set a flag; the loop finishes the batch in hand, then
closes the consumer (leaving the group) and returns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from worker.clock import wall_ms
from worker.config import Settings
from worker.core.pipeline import Outcome, Prediction, ScoringContext, score_values
from worker.errors import Rejection
from worker.kafka_io import BatchConsumer, Message
from worker.model.bundle import ModelBundle
from worker.probes import Health
from worker.shutdown import StopFlag
from worker.stream.metrics import WorkerMetrics
from worker.stream.reload import ReloadEvent
from worker.stream.sinks import Headers, Sink
from worker.stream.swap import apply_events

log = logging.getLogger(__name__)
DEAD_LETTER_SUMMARY_S = 60.0  # one summary line a minute, never a line per event



@dataclass
class Totals:
    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    batches: int = 0


def dead_letter_headers(
    m: Message, r: Rejection, bundle: ModelBundle, worker_id: str, now_ms: int
) -> Headers:
    """Headers of a dead letter (schemas/dead_letter.schema.json)."""
    return [
        ("dlq.error.kind", r.kind.value),
        ("dlq.error.message", r.message),
        ("dlq.source.topic", m.topic() or ""),
        ("dlq.source.partition", str(m.partition())),
        ("dlq.source.offset", str(m.offset())),
        ("dlq.model.name", bundle.manifest.name),
        ("dlq.model.version", bundle.manifest.version),
        ("dlq.worker.id", worker_id),
        ("dlq.failed_at", str(now_ms)),
    ]


class ReloadSource(Protocol):
    def take(self) -> list[ReloadEvent]: ...


@dataclass
class Runner:
    """One worker's loop over already-built clients; run_worker builds them."""

    settings: Settings
    ctx: ScoringContext
    consumer: BatchConsumer
    #: Where outputs go (worker/stream/sinks/); the Kafka producer unless told otherwise.
    producer: Sink
    metrics: WorkerMetrics
    health: Health
    clock_ms: Callable[[], int] = wall_ms
    totals: Totals = field(default_factory=Totals)
    stop: StopFlag = field(default_factory=StopFlag)
    #: Dead letters since the last summary line, by reason (logged once a minute).
    dead_since: Counter[str] = field(default_factory=Counter)
    last_summary: float = field(default_factory=time.monotonic)
    #: Next offset to commit per (topic, partition), for outputs not yet acknowledged.
    pending: dict[tuple[str, int], int] = field(default_factory=dict)
    last_settle: float = field(default_factory=time.monotonic)
    #: Checked bundles waiting to be swapped in between two batches (hot reload).
    reloader: ReloadSource | None = None
    #: The shadow model's context (--shadow-model), or None.
    shadow: ScoringContext | None = None

    def request_stop(self) -> None:
        self.stop.requested = True

    @property
    def stopping(self) -> bool:
        return self.stop.requested

    def run(self) -> Totals:
        self.consumer.before_revoke = self.settle
        try:
            while not self.stopping:
                self.turn()
            self.settle()  # SIGTERM: what was scored is acknowledged and committed
        finally:
            self.consumer.close()
        return self.totals

    def turn(self) -> None:
        s = self.settings
        if self.reloader is not None and (events := self.reloader.take()):
            # Between two batches: a batch is scored by one version, start to end.
            self.ctx = apply_events(self.ctx, events, self.metrics, self._alert, s.worker_id)
        msgs = self.consumer.poll_batch(s.batch_max, s.batch_wait_ms / 1000)
        self.health.turned()
        if msgs:
            self.metrics.inflight.set(len(msgs))
            t0 = time.perf_counter()
            now = self.clock_ms()
            outcomes = score_values([m.value() for m in msgs], self.ctx, now)
            self.metrics.batch_seconds.observe(time.perf_counter() - t0)
            self._publish(msgs, outcomes, now)
            if self.shadow is not None:
                self._publish_shadow(msgs, self.shadow, now)
            self._account(msgs, outcomes)
            pending = self.pending
            for m in msgs:  # a partition's messages come in order: the last one wins
                pending[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        else:
            self.producer.poll()
        due = time.monotonic() - self.last_settle >= s.commit_interval_ms / 1000
        if self.pending and (due or not msgs):
            self.settle()

    def settle(self) -> None:
        """Wait until the broker has every output produced so far, then commit.

        Called every ``commit_interval_ms``, when the input goes quiet, before
        partitions are revoked, and at shutdown: the offsets committed never run
        ahead of acknowledged outputs (at-least-once).
        """
        self.last_settle = time.monotonic()
        if not self.pending:
            return
        self._deliver()
        offsets, self.pending = self.pending, {}
        self._commit(offsets)
        self.metrics.inflight.set(0)

    def _publish(self, msgs: Sequence[Message], outcomes: Sequence[Outcome], now: int) -> None:
        s, send = self.settings, self.producer.send
        for m, o in zip(msgs, outcomes, strict=True):
            if type(o) is Prediction:
                send(s.output_topic, o.payload, m.key())
            else:
                assert isinstance(o, Rejection)
                headers = dead_letter_headers(m, o, self.ctx.bundle, s.worker_id, now)
                send(s.dlq_topic, m.value(), m.key(), headers)

    def _publish_shadow(self, msgs: Sequence[Message], shadow: ScoringContext, now: int) -> None:
        # A second opinion only: its rejections are no dead letters (the main model's are).
        send, topic = self.producer.send, self.settings.shadow_topic
        for m, o in zip(msgs, score_values([m.value() for m in msgs], shadow, now), strict=True):
            if type(o) is Prediction:
                send(topic, o.payload, m.key())

    def _alert(self, key: bytes, value: bytes) -> None:
        self.producer.send(self.settings.alerts_topic, value, key)

    def _deliver(self) -> None:
        """Flush; re-send whatever the broker refused until it has taken everything."""
        failed = self.producer.flush_all(self.settings.flush_timeout_s)
        backoff = 0.1
        while failed:
            log.warning("re-sending %d messages whose delivery failed", len(failed))
            self.metrics.delivery_retries.inc(len(failed))
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            self.producer.resend(failed)
            failed = self.producer.flush_all(self.settings.flush_timeout_s)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        err = self.consumer.commit(offsets)
        if err is None:
            self.metrics.commits.inc()
            self.metrics.last_commit.set(time.time())
        else:
            # Typically a rebalance took the partitions: their new owner re-reads
            # these events (duplicates, never a loss).
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed: %s", err)

    def _account(self, msgs: Sequence[Message], outcomes: Sequence[Outcome]) -> None:
        m, t = self.metrics, self.totals
        now_ms = self.clock_ms()
        reasons: Counter[str] = Counter()
        decisions: Counter[str] = Counter()
        stamps: list[int] = []
        for msg, o in zip(msgs, outcomes, strict=True):
            if type(o) is Prediction:
                stamps.append(msg.timestamp()[1])
                decisions[str(o.record["label"])] += 1
            else:
                assert isinstance(o, Rejection)
                reasons[o.kind.value] += 1
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
        self.dead_since.update(reasons)
        if self.dead_since and time.monotonic() - self.last_summary >= DEAD_LETTER_SUMMARY_S:
            log.warning("dead letters in the last %.0fs", time.monotonic() - self.last_summary,
                        extra={"dead_letters": dict(self.dead_since)})  # fmt: skip
            self.dead_since.clear()
            self.last_summary = time.monotonic()
        if self.ctx.bundle.manifest.task != "regression":
            for decision, n in decisions.items():
                m.predictions.labels(decision).inc(n)
