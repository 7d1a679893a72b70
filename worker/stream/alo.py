"""At-least-once delivery, pipelined.

The loop keeps producing while earlier batches are in flight. Every
``commit_interval_ms`` (and whenever the input goes quiet) it commits, without
waiting, each partition's offset up to the last event whose outputs the broker has
acknowledged, in order (worker/stream/ledger.py). A kill -9 at any moment can only
repeat outputs. Before partitions are revoked and at shutdown it waits (at most
``flush_timeout_s``) for what is in flight and commits synchronously, so a rolling
restart or a rebalance repeats nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from worker.kafka_io import BatchConsumer, Message, PartitionId
from worker.stream.delivery import Delivery
from worker.stream.outputs import Output

log = logging.getLogger(__name__)


@dataclass
class AtLeastOnce:
    delivery: Delivery
    consumer: BatchConsumer
    #: Called while waiting for the broker, so the probes see the loop alive.
    heartbeat: Callable[[], None] = lambda: None
    last_commit: float = field(default_factory=time.monotonic)
    #: The latest offset handed to a commit per partition: an asynchronous commit may
    #: fail afterwards (a rebalance in progress), so a settling commit sends them again.
    _latest: dict[PartitionId, int] = field(default_factory=dict)
    _commit_failures: int = 0
    _blocked_warned: float = field(default_factory=time.monotonic)

    #: Asynchronous commits whose outcome has not come yet, and whether one failed,
    #: since the last settling commit: either way that one sends ``_latest`` again.
    _async_out: int = 0
    _async_failed: bool = False

    def __post_init__(self) -> None:
        self.consumer.on_commit = self._async_outcome
        # Statistics travel after the outputs they count: offsets wait for them too.
        self.delivery.ledger.hold = self.delivery.stats is not None

    def blocked(self) -> bool:
        return self.delivery.over_bound()

    def admit(self, msgs: list[Message]) -> list[Message]:
        return msgs

    def publish(self, msgs: Sequence[Message], outputs: list[Output]) -> None:
        self.delivery.open_flight(msgs, outputs)

    def alert(self, key: bytes, value: bytes) -> None:
        self.delivery.send_alert(key, value)

    def wait(self, timeout_s: float) -> None:
        d = self.delivery
        d.sink.poll(timeout_s)
        self.tick(quiet=False)
        now = time.monotonic()
        if self.blocked() and now - self._blocked_warned >= d.settings.flush_timeout_s:
            self._blocked_warned = now
            log.warning("reading paused: %d events wait for the broker to acknowledge their "
                        "outputs", d.ledger.events)

    def tick(self, quiet: bool) -> None:
        d = self.delivery
        d.sink.poll(0)
        d.settle_refusals()
        d.ledger.advance()
        d.metrics.inflight.set(d.ledger.events)
        due = time.monotonic() - self.last_commit >= d.settings.commit_interval_ms / 1000
        if due or quiet:
            d.flush_stats()
            if d.ledger.ready:
                self._commit()
            elif d.ledger.hold:  # the barrier just sent: its offsets go at the next due
                self.last_commit = time.monotonic()
        if not self.blocked():
            self._blocked_warned = time.monotonic()

    def revoke(self, parts: list[PartitionId]) -> None:
        # Still the owner: settle what was scored, so the next owner starts after it.
        timeout_s = self.delivery.settings.flush_timeout_s
        deadline = time.monotonic() + timeout_s
        self.delivery.flush_stats()
        self.drain(timeout_s)
        self._settle(deadline)
        self._forget(parts)

    def lost(self, parts: list[PartitionId]) -> None:
        # Another member may own them already: none of their offsets may be committed.
        self._forget(parts)

    def close(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.delivery.flush_stats()
        self.drain(timeout_s)
        self._settle(deadline)

    def _forget(self, parts: list[PartitionId]) -> None:
        self.delivery.ledger.forget(parts)
        for tp in parts:
            self._latest.pop(tp, None)

    def _settle(self, deadline: float) -> None:
        """Commit synchronously every acknowledged offset, those of earlier asynchronous
        commits too (one may have failed since), trying again while the group answers
        "not now" (a rebalance in progress), until ``deadline``."""
        self.last_commit = time.monotonic()
        offsets = self.delivery.ledger.take()
        self._latest.update(offsets)
        if self._async_out or self._async_failed:
            offsets = dict(self._latest)
        if not offsets:
            return
        err = self.consumer.commit(offsets, False, max(0.0, deadline - time.monotonic()))
        self._committed(err)
        if err is None:
            self._async_out, self._async_failed = 0, False

    def drain(self, timeout_s: float) -> bool:
        """Wait until every output is acknowledged (re-sending, replacing or dropping
        refused ones); False when ``timeout_s`` ran out first."""
        d = self.delivery
        deadline = time.monotonic() + timeout_s
        while True:
            d.settle_refusals()
            d.ledger.advance()
            if d.ledger.idle:
                return True
            if time.monotonic() >= deadline:
                log.warning("%d events still wait for the broker after %.0fs; their offsets "
                            "stay uncommitted (they will be read again)", d.ledger.events,
                            timeout_s)
                return False
            d.sink.poll(0.1)
            self.heartbeat()

    def _commit(self) -> None:
        """Commit what is acknowledged, without waiting (the outcome comes to
        ``_async_outcome`` from a later poll)."""
        self.last_commit = time.monotonic()
        offsets = self.delivery.ledger.take()
        if not offsets:
            return
        self._latest.update(offsets)
        self._async_out += 1  # before: a client may report the outcome at once
        err = self.consumer.commit(offsets, asynchronous=True)
        if err is not None:  # refused at once: no outcome will come
            self._async_out -= 1
            self._async_failed = True
            self._committed(err)

    def _async_outcome(self, err: str | None) -> None:
        self._async_out = max(0, self._async_out - 1)
        self._async_failed = self._async_failed or err is not None
        self._committed(err)

    def _committed(self, err: str | None) -> None:
        """An offset commit's outcome; failures are logged when they start and stop."""
        metrics = self.delivery.metrics
        if err is None:
            metrics.commits.inc()
            metrics.last_commit.set(time.time())
            if self._commit_failures:
                log.info("offset commits succeed again (%d failed)", self._commit_failures)
                self._commit_failures = 0
            return
        # Typically a rebalance took the partitions, or the broker is away: the events
        # are read again (duplicates, never a loss).
        metrics.commit_failures.inc()
        if not self._commit_failures:
            log.warning("offset commit failed: %s (logged again once commits succeed)", err)
        self._commit_failures += 1
