"""Exactly-once delivery: a batch's predictions, dead letters, shadow records and input
offsets commit in one Kafka transaction, or not at all.

A transaction stays open for ``commit_interval_ms`` (never more than MAX_TXN_S, far
below the coordinator's transaction timeout), or until the input goes quiet, or until
it holds ``max_in_flight`` events; it may span several batches, each wholly inside
it. A rebalance, a refused output or an abortable error aborts it and rewinds the
consumer to the committed offsets, without exiting. Every transactional call waits
at most TX_CALL_S, then the loop turns and tries again, so the probes keep answering.

A record whose output the broker refuses for good would abort every retry of its
transaction, and the broker refuses a whole record batch for one bad record, so the
coordinates of every refused record are remembered: each is then read again in a
transaction of its own. Refused alone, it is to blame: the next retry sends a fitted
fallback dead letter instead, or, if that was refused too, nothing (counted and logged
once). So the loop always advances, and innocent batch-mates keep their outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from worker.errors import SendError
from worker.kafka_io import BatchConsumer, Message, PartitionId, partition_id
from worker.kafka_io.clients import next_offsets
from worker.stream.delivery import Delivery
from worker.stream.ledger import Flight
from worker.stream.outputs import Kind, Output
from worker.stream.sinks import TransactionalSink, TxState

log = logging.getLogger(__name__)
MAX_TXN_S: Final = 10.0
TX_CALL_S: Final = 1.0
REWIND_AGAIN_S: Final = 0.2
#: An input record: (topic, partition, offset).
InputPosition = tuple[str, int, int]


class Phase(Enum):
    """Where the worker's transaction is."""

    IDLE = "idle"
    OPEN = "open"
    #: A commit is in progress (it may take several turns).
    COMMITTING = "committing"
    #: Aborting; the consumer then rewinds to the committed offsets.
    ABORTING = "aborting"


#: Every move of the phase: ExactlyOnce._move checks each one against this table.
MOVES: Final = {
    Phase.IDLE: {Phase.OPEN},
    Phase.OPEN: {Phase.COMMITTING, Phase.ABORTING},
    Phase.COMMITTING: {Phase.COMMITTING, Phase.IDLE, Phase.ABORTING},
    Phase.ABORTING: {Phase.IDLE},
}


class RetryAs(Enum):
    """What the retry of an input does with an output the broker refused for good."""

    #: Refused among others: the input is read again in a transaction of its own.
    SUSPECT = "suspect"
    #: Its main output refused alone: a fitted fallback dead letter instead.
    FALLBACK = "fallback"
    #: Its fallback refused alone too: nothing.
    DROP = "drop"
    #: Its shadow record refused alone: no shadow record.
    DROP_SHADOW = "shadow"


@dataclass
class ExactlyOnce:
    delivery: Delivery
    sink: TransactionalSink
    consumer: BatchConsumer
    #: Called while waiting for the broker, so the probes see the loop alive.
    heartbeat: Callable[[], None] = lambda: None
    phase: Phase = Phase.IDLE
    opened: float = 0.0
    #: Next offset per partition read inside the open transaction.
    offsets: dict[PartitionId, int] = field(default_factory=dict)
    events: int = 0
    rewind_needed: bool = False
    #: Inputs an output of which was refused for good, and what their retry does.
    refused_inputs: dict[InputPosition, dict[RetryAs, SendError]] = field(default_factory=dict)
    #: Alerts of the open transaction (key, value): sent again after an abort.
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The open transaction holds one suspect event and nothing else.
    isolated: bool = False
    #: Feature statistics went out in the open transaction before its commit (see publish).
    stats_joined: bool = False

    def _move(self, to: Phase) -> None:
        assert to in MOVES[self.phase], f"transaction phase {self.phase} -> {to}"
        self.phase = to

    def blocked(self) -> bool:
        return (self.phase in (Phase.COMMITTING, Phase.ABORTING) or self.rewind_needed
                or self.events >= self.delivery.settings.max_in_flight)

    def wait(self, timeout_s: float) -> None:
        if self.phase is Phase.COMMITTING or (self.phase is Phase.OPEN and self.blocked()):
            self._commit_step()
        elif self.phase is Phase.ABORTING or self.rewind_needed:
            self._recover_step()
        else:
            self.sink.poll(timeout_s)
            self.tick(quiet=False)

    def admit(self, msgs: list[Message]) -> list[Message]:
        # A rebalance during this poll aborted the transaction: what came with it is
        # read again after the rewind.
        if self.rewind_needed or self.phase is Phase.ABORTING:
            return []
        if not self.refused_inputs or self.isolated:
            return msgs if not self.isolated else self._push_back(msgs, 0)
        first = next((i for i, m in enumerate(msgs) if _position(m) in self.refused_inputs),
                     None)
        if first is None:
            return msgs
        if first > 0:  # up to the suspect now; the suspect in a transaction of its own
            return self._push_back(msgs, first)
        if self.phase is not Phase.IDLE:  # commit what is open first (the poll looks quiet)
            return self._push_back(msgs, 0)
        self.isolated = True
        return self._push_back(msgs, 1)

    def _push_back(self, msgs: list[Message], keep: int) -> list[Message]:
        """Keep ``msgs[:keep]``; the consumer reads the rest again."""
        first: dict[PartitionId, int] = {}
        for m in msgs[keep:]:
            first.setdefault(partition_id(m), m.offset() or 0)
        if first:
            self.consumer.seek(first)
        return msgs[:keep]

    def publish(self, msgs: Sequence[Message], outputs: list[Output]) -> None:
        self._ensure_open()
        if self.refused_inputs:
            outputs = self._as_retried(msgs, outputs)
        self.delivery.open_flight(msgs, outputs)
        if not self.stats_joined:
            # The counts of the transaction's first batch go out beside the second batch's
            # outputs: the statistics partition joins the transaction with theirs, and the
            # commit's last record goes to a partition already in it (a partition first
            # written at commit time costs the commit an AddPartitionsToTxn round trip).
            self.stats_joined = self.delivery.flush_stats()
        self.offsets.update(next_offsets(msgs))
        self.events += len(msgs)
        self.delivery.metrics.inflight.set(self.events)

    def alert(self, key: bytes, value: bytes) -> None:
        self._ensure_open()
        self.alerts.append((key, value))
        self.delivery.send_alert(key, value)

    def tick(self, quiet: bool) -> None:
        ledger = self.delivery.ledger
        self.sink.poll(0)
        if any(f.failures for f in ledger.flights):
            self._abort("an output was refused")
            return
        ledger.advance()
        ledger.take()  # offsets travel in the transaction, not through the ledger
        if self.phase is not Phase.OPEN:
            return
        age = time.monotonic() - self.opened
        interval_s = self.delivery.settings.commit_interval_ms / 1000
        if quiet or self.isolated or age >= min(interval_s, MAX_TXN_S):
            self._commit_step()

    def revoke(self, parts: list[PartitionId]) -> None:
        # The next owner's read of the committed offsets waits for an open transaction
        # that holds its partitions' offsets: end it now.
        if self.phase in (Phase.OPEN, Phase.COMMITTING):
            self._abort(f"partitions revoked: {parts}")
        self._finish_abort(self.delivery.settings.flush_timeout_s)

    def lost(self, parts: list[PartitionId]) -> None:
        self.revoke(parts)

    def close(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.phase in (Phase.OPEN, Phase.COMMITTING) and time.monotonic() < deadline:
            self._commit_step()
            self.heartbeat()
        if self.phase in (Phase.OPEN, Phase.COMMITTING):
            self._abort("shutdown before the transaction could commit")
        self._finish_abort(max(1.0, deadline - time.monotonic()))

    def _ensure_open(self) -> None:
        if self.phase is Phase.IDLE:
            self.sink.begin()
            self._move(Phase.OPEN)
            self.opened = time.monotonic()

    def _commit_step(self) -> None:
        if self.phase is Phase.OPEN:  # the statistics of this transaction's events, in it
            self.delivery.flush_stats()
        self._move(Phase.COMMITTING)
        metrics = self.delivery.metrics
        # TxState(): a sink written against the plain strings of old answers the same
        result = TxState(self.sink.commit(self.offsets, self.consumer.group_metadata(),
                                          TX_CALL_S))
        if result is TxState.COMMITTED:
            metrics.transactions.labels("committed").inc()
            metrics.commits.inc()
            metrics.last_commit.set(time.time())
            self._forget_committed(self.offsets)
            self._reset()
            self.alerts.clear()
        elif result is not TxState.PENDING:
            self._abort("the transaction failed to commit")
        elif time.monotonic() - self.opened > self.delivery.settings.flush_timeout_s:
            self.opened = time.monotonic()  # one line per flush_timeout_s
            log.warning("transaction still committing; waiting for the broker")

    def _abort(self, why: str) -> None:
        for flight, position, err in self.delivery.ledger.failures():
            if err.permanent:
                self._remember(flight, position, err, to_blame=self.isolated)
        log.warning("transaction aborted (%s); reading again from the committed offsets", why)
        self.delivery.metrics.transactions.labels("aborted").inc()
        self._move(Phase.ABORTING)
        self.rewind_needed = True

    def _recover_step(self, rewind: bool = True) -> None:
        if self.phase is Phase.ABORTING:
            self.delivery.ledger.failures()  # the abort answers for them
            if not self.sink.abort(TX_CALL_S):
                return
            self._reset()
        if not (rewind and self.rewind_needed):
            return
        if not self.consumer.rewind(TX_CALL_S):
            time.sleep(REWIND_AGAIN_S)  # a refusal comes at once: never spin on it
            return
        self.rewind_needed = False
        pending, self.alerts = self.alerts, []
        for key, value in pending:
            self.alert(key, value)

    def _finish_abort(self, timeout_s: float) -> None:
        """Abort now (inside a rebalance callback, or at shutdown); the rewind waits for
        the next turn, outside librdkafka's callback."""
        deadline = time.monotonic() + timeout_s
        while self.phase is Phase.ABORTING and time.monotonic() < deadline:
            self._recover_step(rewind=False)
            self.heartbeat()

    def _reset(self) -> None:
        self._move(Phase.IDLE)
        self.isolated = self.stats_joined = False
        self.offsets = {}
        self.events = 0
        self.delivery.clear()
        self.delivery.metrics.inflight.set(0)

    def _remember(self, flight: Flight, position: int, err: SendError, to_blame: bool) -> None:
        """A record refused for good: a suspect, or, refused alone, to blame."""
        out = flight.outputs[position]
        if out.source < 0:  # an alert: dropped, not sent again
            self.alerts = [a for a in self.alerts if a[1] != out.value]
            self.delivery.drop(out, None, err)
            return
        plans = self.refused_inputs.setdefault(_position(flight.msgs[out.source]), {})
        if to_blame:
            plan = {Kind.SHADOW: RetryAs.DROP_SHADOW, Kind.FALLBACK: RetryAs.DROP}.get(
                out.kind, RetryAs.FALLBACK)
            plans[plan] = err
        else:
            plans.setdefault(RetryAs.SUSPECT, err)

    def _as_retried(self, msgs: Sequence[Message], outputs: list[Output]) -> list[Output]:
        """This retry's outputs for inputs refused before: fallbacks, or nothing."""
        kept: list[Output] = []
        for out in outputs:
            m = msgs[out.source] if out.source >= 0 else None
            plans = self.refused_inputs.get(_position(m)) if m is not None else None
            if not plans or m is None:
                kept.append(out)
            elif out.kind is Kind.SHADOW:
                if RetryAs.DROP_SHADOW in plans:
                    self.delivery.drop(out, m, plans[RetryAs.DROP_SHADOW])
                else:
                    kept.append(out)
            elif RetryAs.DROP in plans:
                self.delivery.drop(out, m, plans[RetryAs.DROP])
            elif RetryAs.FALLBACK in plans and out.kind is not Kind.FALLBACK:
                kept.append(self.delivery.fallback_for(m, out.source, out.topic,
                                                       plans[RetryAs.FALLBACK]))
            else:
                kept.append(out)
        return kept

    def _forget_committed(self, committed: dict[PartitionId, int]) -> None:
        """Refused inputs the commit moved past are never read again."""
        self.refused_inputs = {c: v for c, v in self.refused_inputs.items()
                               if c[2] >= committed.get((c[0], c[1]), -1)}


def _position(m: Message) -> InputPosition:
    return (*partition_id(m), m.offset() or 0)
