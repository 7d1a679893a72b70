"""Sending a batch's outputs and handling what the broker refused: the part both
guarantees share (worker/stream/alo.py, worker/stream/eos.py build on it).

Nothing here waits: outputs are queued with a delivery report each, reports are
served by ``poll``, and the ledger (worker/stream/ledger.py) turns acknowledged
flights into committable offsets.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from worker.config import Settings
from worker.errors import SendError
from worker.kafka_io import BatchConsumer, Message
from worker.stream.ledger import Flight, Ledger, TopicPartition
from worker.stream.metrics import WorkerMetrics
from worker.stream.outputs import Kind, Output, Rejecter, fallback, fallback_kind
from worker.stream.sinks import Sink

log = logging.getLogger(__name__)
#: Pause before a record whose delivery failed for a transient reason is sent again.
RETRY_DELAY_S = 0.5
#: At most one line a minute about re-sent records (each one is counted).
RETRY_LOG_S = 60.0


class Guarantee(Protocol):
    """What the loop asks of a delivery guarantee (at-least-once or exactly-once)."""

    who: Rejecter

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

    def revoke(self, parts: list[TopicPartition]) -> None: ...

    def lost(self, parts: list[TopicPartition]) -> None: ...

    def close(self, timeout_s: float) -> None:
        """Shutdown: settle what is in flight within ``timeout_s``, commit what may be."""


@dataclass
class Delivery:
    """Queues outputs with their flight; re-sends, replaces or drops refused ones."""

    settings: Settings
    sink: Sink
    consumer: BatchConsumer
    metrics: WorkerMetrics
    who: Rejecter
    clock_ms: Callable[[], int]
    ledger: Ledger = field(default_factory=Ledger)
    #: Transient refusals waiting to be sent again: (not before, output).
    retry: deque[tuple[float, Output]] = field(default_factory=deque)
    _retried: int = 0
    _retry_logged: float = 0.0

    def blocked(self) -> bool:
        return self.ledger.events >= self.settings.max_in_flight

    def _open(self, msgs: Sequence[Message], outputs: list[Output]) -> Flight:
        flight = self.ledger.open(msgs)
        self._send(outputs, flight)
        self.metrics.inflight.set(self.ledger.events)
        return flight

    def _send(self, outputs: list[Output], flight: Flight) -> None:
        flight.pending += len(outputs)
        send = self.sink.send
        for o in outputs:
            o.flight = flight
            send(o.topic, o.value, o.key, o.headers, o.delivered)

    def alert(self, key: bytes, value: bytes) -> None:
        out = Output(Kind.ALERT, self.settings.alerts_topic, value, key, None, None)
        self._send([out], self.ledger.open(()))

    def _refused(self, out: Output, err: SendError) -> None:
        """At-least-once handling of one refusal: again later, a fallback, or dropped."""
        if not err.permanent:
            self.retry.append((time.monotonic() + RETRY_DELAY_S, out))
            return
        if out.kind in (Kind.PREDICTION, Kind.DEAD_LETTER) and out.source is not None:
            s = self.settings
            replacement = fallback(out.source, out.topic, err, s.dlq_topic, self.who,
                                   self.clock_ms())  # fmt: skip
            replacement.flight = out.flight
            self.metrics.dead_letters.labels(fallback_kind(err).value).inc()
            self.sink.send(replacement.topic, replacement.value, replacement.key,
                           replacement.headers, replacement.delivered)  # fmt: skip
            return
        self._drop(out, err)

    def _drop(self, out: Output, err: SendError) -> None:
        """The one outcome left for a record nothing can carry: counted, logged once, and
        its offset committed like any other (a loop that never advances is worse)."""
        if out.flight is not None:
            out.flight.pending -= 1
        self.metrics.outputs_dropped.labels(out.kind.value).inc()
        log.error("%s dropped: the broker refused it for good", out.kind.value,
                  extra={"source": out.where, "topic": out.topic, "reason": err.reason,
                         "bytes": len(out.value or b"") + len(out.key or b"")})  # fmt: skip

    def _resend_due(self) -> None:
        now = time.monotonic()
        retry = self.retry
        while retry and retry[0][0] <= now:
            _, out = retry.popleft()
            self.sink.send(out.topic, out.value, out.key, out.headers, out.delivered)
            self.metrics.delivery_retries.inc()
            self._retried += 1
        if self._retried and now - self._retry_logged >= RETRY_LOG_S:
            log.warning("re-sent %d records whose delivery failed (the broker was away or "
                        "refused them for a while)", self._retried)  # fmt: skip
            self._retried, self._retry_logged = 0, now
