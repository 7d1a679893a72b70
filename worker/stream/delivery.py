"""Sending a batch's outputs and handling what the broker refused: the part both
guarantees share (worker/stream/alo.py and worker/stream/eos.py each hold a Delivery).

Nothing here waits: outputs are queued with a delivery report each, reports are
served by ``poll``, and the ledger (worker/stream/ledger.py) turns acknowledged
flights into committable offsets.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from operator import attrgetter
from typing import Protocol

from worker.config import Settings
from worker.core.feature_stats import StatsBuffer
from worker.core.pipeline import Scored, ScoringContext
from worker.errors import SendError
from worker.kafka_io import Message, PartitionId
from worker.model.bundle import ModelBundle
from worker.stream.ledger import Flight, Ledger
from worker.stream.metrics import WorkerMetrics
from worker.stream.outputs import (
    KEYLESS,
    Kind,
    Output,
    Rejecter,
    dropped_if_keyless,
    fallback,
    fallback_kind,
    where,
)
from worker.stream.sinks import BatchSink, OnDelivery, Sent, Sink

log = logging.getLogger(__name__)
#: Pause before a record whose delivery failed for a transient reason is sent again.
RETRY_DELAY_S = 0.5
#: At most one line a minute about re-sent records (each one is counted).
RETRY_LOG_S = 60.0
#: How often a refused record is sent alone while others keep failing with it.
ALONE_ATTEMPTS = 5
_KIND = attrgetter("kind")


class DeliveryGuarantee(Protocol):
    """What the loop asks of a delivery guarantee (at-least-once or exactly-once)."""

    def blocked(self) -> bool:
        """True while the loop must not read more (in-flight bound, a commit in progress)."""

    def wait(self, timeout_s: float) -> None:
        """Make progress on what blocks, waiting at most about ``timeout_s``."""

    def admit(self, msgs: list[Message]) -> list[Message]:
        """The consumed messages to score (exactly-once drops them after an abort)."""

    def publish(self, msgs: Sequence[Message], outputs: list[Output]) -> None: ...

    def alert(self, key: bytes, value: bytes) -> None: ...

    def tick(self, quiet: bool) -> None:
        """Serve delivery reports, handle refusals, commit when due (or the input is quiet)."""

    def revoke(self, parts: list[PartitionId]) -> None: ...

    def lost(self, parts: list[PartitionId]) -> None: ...

    def close(self, timeout_s: float) -> None:
        """Shutdown: settle what is in flight within ``timeout_s``, commit what may be."""


@dataclass
class Delivery:
    """Queues outputs with their flight; re-sends, replaces or drops refused ones."""

    settings: Settings
    sink: Sink
    metrics: WorkerMetrics
    rejecter: Rejecter
    clock_ms: Callable[[], int]
    ledger: Ledger = field(default_factory=Ledger)
    #: Transient refusals waiting to be sent again: (not before, flight, position).
    retry: deque[tuple[float, Flight, int]] = field(default_factory=deque)
    #: Records refused for good once: the broker refuses a whole record batch for one
    #: bad record, so each is sent again alone (one at a time) before it is given up on.
    suspects: deque[tuple[Flight, int, int]] = field(default_factory=deque)
    #: The suspect in flight (flight, position, attempt), then its verdict.
    _alone: tuple[Flight, int, int] | None = None
    _verdict: SendError | None = None
    #: Refusals of other records since the suspect went out: its batch-mates were not
    #: all innocent, so a refusal says nothing about the suspect.
    _refusals: int = 0
    _retried: int = 0
    _retry_logged: float = 0.0
    #: Feature counts waiting for their delivery unit (None: statistics are off).
    stats: StatsBuffer | None = None
    #: The sink's ``send_all`` when it has one (worker/stream/sinks/: BatchSink).
    _send_all: Callable[[Sequence[Output], OnDelivery, int], None] | None = field(
        init=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.sink, BatchSink):
            self._send_all = self.sink.send_all

    def new_model(self, bundle: ModelBundle) -> None:
        """The served model changed: dead letters from now on name it."""
        self.rejecter = replace(self.rejecter, bundle=bundle)

    def over_bound(self) -> bool:
        return self.ledger.events >= self.settings.max_in_flight

    def open_flight(self, msgs: Sequence[Message], outputs: list[Output]) -> Flight:
        flight = self.ledger.open(msgs)
        self.send(flight, outputs)
        self.metrics.inflight.set(self.ledger.events)
        return flight

    def send(self, flight: Flight, outputs: list[Output]) -> None:
        """Queue ``outputs`` in ``flight``; each one's verdict names its position (the
        flight's one ``report`` for all, each send tagged with its position)."""
        first = len(flight.outputs)
        flight.outputs += outputs
        flight.pending += len(outputs)
        dropped = Kind.DROPPED
        if self._send_all is not None and dropped not in map(_KIND, outputs):
            self._send_all(outputs, flight.report, first)  # the usual batch: one call
            return
        send, report = self.sink.send, flight.report
        for position, out in enumerate(outputs, first):
            if out.kind is dropped:  # what no output accepts is a dead letter nobody gets
                self.drop(out._replace(kind=Kind.DEAD_LETTER), flight.msgs[out.source], KEYLESS)
                flight.pending -= 1
                continue
            send(out.topic, out.value, out.key, out.headers, report, position)

    def count_features(self, ctx: ScoringContext, scored: Scored, now_ms: int) -> None:
        """Buffer a published batch's feature counts until its delivery unit."""
        if self.stats is not None and scored.feature_counts is not None:
            bundle = ctx.bundle
            self.stats.add(bundle.name, bundle.version, ctx.profile_digest,
                           scored.feature_counts, scored.counted, now_ms, scored.segment_counts)

    def flush_stats(self) -> bool:
        """The buffered statistics as records (exactly-once: into the open transaction;
        at-least-once: in a barrier flight, which the offsets they count wait for);
        False when there were none."""
        ledger = self.ledger
        flight = ledger.open_barrier() if ledger.hold else None
        if not self.stats:
            return False
        topic = self.settings.feature_stats_topic
        self.send(flight or ledger.open(()), [Output(Kind.STATS, topic, r.encode(), r.key,
                                                     None, -1) for r in self.stats.take()])
        return True

    def send_alert(self, key: bytes, value: bytes) -> None:
        alert = Output(Kind.ALERT, self.settings.alerts_topic, value, key, None, -1)
        self.send(self.ledger.open(()), [alert])

    def fallback_for(self, m: Message, source: int, refused_topic: str,
                     err: SendError) -> Output:
        """The fitted dead letter of input ``m`` whose output the broker refused for good."""
        out = fallback(m, source, refused_topic, err, self.settings.dlq_topic, self.rejecter,
                       self.clock_ms(), refused_by_broker=True)
        return dropped_if_keyless(out, self.rejecter)

    def settle_refusals(self) -> None:
        """At-least-once handling of the refusals: again later, again alone, or given up."""
        for flight, position, err in self.ledger.failures():
            self._refused(flight, position, err)
        self._resend_due()
        self._send_alone()

    def clear(self) -> None:
        """Forget every flight and pending re-send (exactly-once, after its transaction)."""
        self.ledger.clear()
        self.retry.clear()
        if self.stats is not None:  # aborted: the events are read, and counted, again
            self.stats.clear()

    def _refused(self, flight: Flight, pos: int, err: SendError) -> None:
        self._refusals += 1
        if not err.permanent:
            self.retry.append((time.monotonic() + RETRY_DELAY_S, flight, pos))
        else:
            self.suspects.append((flight, pos, 1))

    def _send_alone(self) -> None:
        """Judge the suspect in flight (its verdict came), then send the next one alone."""
        if self._alone is not None and self._verdict is not None:
            (flight, pos, attempt), err = self._alone, self._verdict
            self._alone = self._verdict = None
            if self._refusals and attempt < ALONE_ATTEMPTS:
                self.suspects.append((flight, pos, attempt + 1))  # others failed with it
            else:
                self._give_up(flight, pos, err)
        if self._alone is not None or not self.suspects:
            return
        self._alone = flight, pos, _ = self.suspects.popleft()
        self._refusals = 0
        out = flight.outputs[pos]
        self.sink.send(out.topic, out.value, out.key, out.headers,
                       partial(self._alone_done, flight), pos)

    def _alone_done(self, flight: Flight, pos: int, err: SendError | None,
                    sent: Sent | None) -> None:
        if err is None:
            flight.pending -= 1
            self._alone = None
        elif not err.permanent:
            self.retry.append((time.monotonic() + RETRY_DELAY_S, flight, pos))
            self._alone = None
        else:  # judged after this poll's other verdicts are in (see _send_alone)
            self._verdict = err

    def _give_up(self, flight: Flight, pos: int, err: SendError) -> None:
        """Refused for good even alone: a fitted dead letter instead, or dropped."""
        out = flight.outputs[pos]
        src = flight.msgs[out.source] if out.source >= 0 else None
        flight.pending -= 1
        if out.kind in (Kind.PREDICTION, Kind.DEAD_LETTER) and src is not None:
            replacement = self.fallback_for(src, out.source, out.topic, err)
            self.metrics.dead_letters.labels(fallback_kind(err).value).inc()
            self.send(flight, [replacement])
        else:
            self.drop(out, src, err)

    def drop(self, out: Output, src: Message | None, err: SendError) -> None:
        """The one outcome left for a record nothing can carry: counted, logged once, and
        its offset committed like any other (a loop that never advances is worse)."""
        self.metrics.outputs_dropped.labels(out.kind.value).inc()
        log.error("%s dropped: no output accepts it", out.kind.value,
                  extra={"source": where(src), "topic": out.topic, "reason": err.reason,
                         "bytes": len(out.value or b"") + len(out.key or b"")})

    def _resend_due(self) -> None:
        now = time.monotonic()
        retry = self.retry
        while retry and retry[0][0] <= now:
            _, flight, pos = retry.popleft()
            out = flight.outputs[pos]
            self.sink.send(out.topic, out.value, out.key, out.headers, flight.report, pos)
            self.metrics.delivery_retries.inc()
            self._retried += 1
        if self._retried and now - self._retry_logged >= RETRY_LOG_S:
            log.warning("re-sent %d records whose delivery failed (the broker was away or "
                        "refused them for a while)", self._retried)
            self._retried, self._retry_logged = 0, now
