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
from typing import Final, cast

from worker.errors import SendError
from worker.kafka_io import Message
from worker.stream.delivery import Delivery
from worker.stream.ledger import Flight, TopicPartition
from worker.stream.outputs import Kind, Output, carry, fallback
from worker.stream.sinks import COMMITTED, PENDING, Sent, TransactionalSink

log = logging.getLogger(__name__)
MAX_TXN_S: Final = 10.0
TX_CALL_S: Final = 1.0
Coordinates = tuple[str, int, int]
#: What to do on the retry of a record whose output was refused for good.
SUSPECT, MAIN_FALLBACK, MAIN_DROP, SHADOW_DROP = "suspect", "fallback", "drop", "shadow"


@dataclass
class ExactlyOnce(Delivery):
    turned: Callable[[], None] = lambda: None
    #: idle, open, committing (commit in progress) or aborting.
    state: str = "idle"
    opened: float = 0.0
    #: Next offset per partition read inside the open transaction.
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    events: int = 0
    rewind_needed: bool = False
    poison: dict[Coordinates, dict[str, SendError]] = field(default_factory=dict)
    #: Alerts of the open transaction (key, value): sent again after an abort.
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The open transaction holds one suspect event and nothing else.
    isolated: bool = False

    @property
    def tx(self) -> TransactionalSink:
        return cast(TransactionalSink, self.sink)

    def blocked(self) -> bool:
        return (self.state in ("committing", "aborting") or self.rewind_needed
                or self.events >= self.settings.max_in_flight)  # fmt: skip

    def wait(self, timeout_s: float) -> None:
        if self.state == "committing" or (self.state == "open" and self.blocked()):
            self._commit_step()
        elif self.state == "aborting" or self.rewind_needed:
            self._recover_step()
        else:
            self.sink.poll(timeout_s)
            self.tick(quiet=False)

    def admit(self, msgs: list[Message]) -> list[Message]:
        # A rebalance during this poll aborted the transaction: what came with it is
        # read again after the rewind.
        if self.rewind_needed or self.state == "aborting":
            return []
        if not self.poison or self.isolated:
            return msgs if not self.isolated else self._push_back(msgs, 0)
        first = next((i for i, m in enumerate(msgs) if _coords(m) in self.poison), None)
        if first is None:
            return msgs
        if first > 0:  # up to the suspect now; the suspect in a transaction of its own
            return self._push_back(msgs, first)
        if self.state != "idle":  # commit what is open first (the poll looks quiet)
            return self._push_back(msgs, 0)
        self.isolated = True
        return self._push_back(msgs, 1)

    def _push_back(self, msgs: list[Message], keep: int) -> list[Message]:
        """Keep ``msgs[:keep]``; the consumer reads the rest again."""
        first: dict[TopicPartition, int] = {}
        for m in msgs[keep:]:
            first.setdefault((m.topic() or "", m.partition() or 0), m.offset() or 0)
        if first:
            self.consumer.seek(first)
        return msgs[:keep]

    def publish(self, msgs: Sequence[Message], outputs: list[Output]) -> None:
        self._ensure_open()
        if self.poison:
            outputs = self._cure(msgs, outputs)
        self._open(msgs, outputs)
        for m in msgs:
            self.offsets[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        self.events += len(msgs)
        self.metrics.inflight.set(self.events)

    def alert(self, key: bytes, value: bytes) -> None:
        self._ensure_open()
        self.alerts.append((key, value))
        super().alert(key, value)

    def tick(self, quiet: bool) -> None:
        self.sink.poll(0)
        if any(f.failures for f in self.ledger.flights):
            self._abort("an output was refused")
            return
        self.ledger.advance()
        self.ledger.take()  # offsets travel in the transaction, not through the ledger
        if self.state != "open":
            return
        age = time.monotonic() - self.opened
        if quiet or self.isolated or age >= min(self.settings.commit_interval_ms / 1000,
                                                MAX_TXN_S):  # fmt: skip
            self._commit_step()

    def revoke(self, parts: list[TopicPartition]) -> None:
        # The next owner's read of the committed offsets waits for an open transaction
        # that holds its partitions' offsets: end it now.
        if self.state in ("open", "committing"):
            self._abort(f"partitions revoked: {parts}")
        self._finish_abort(self.settings.flush_timeout_s)

    def lost(self, parts: list[TopicPartition]) -> None:
        self.revoke(parts)

    def close(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.state in ("open", "committing") and time.monotonic() < deadline:
            self._commit_step()
            self.turned()
        if self.state in ("open", "committing"):
            self._abort("shutdown before the transaction could commit")
        self._finish_abort(max(1.0, deadline - time.monotonic()))

    def _ensure_open(self) -> None:
        if self.state == "idle":
            self.tx.begin()
            self.state, self.opened = "open", time.monotonic()

    def _commit_step(self) -> None:
        if self.state == "open":  # the statistics of this transaction's events, in it
            self._flush_stats()
        self.state = "committing"
        result = self.tx.commit(self.offsets, self.consumer.group_metadata(), TX_CALL_S)
        if result == COMMITTED:
            self.metrics.transactions.labels("committed").inc()
            self.metrics.commits.inc()
            self.metrics.last_commit.set(time.time())
            self._forget_cured(self.offsets)
            self._reset()
            self.alerts.clear()
        elif result != PENDING:
            self._abort("the transaction failed to commit")
        elif time.monotonic() - self.opened > self.settings.flush_timeout_s:
            self.opened = time.monotonic()  # one line per flush_timeout_s
            log.warning("transaction still committing; waiting for the broker")

    def _abort(self, why: str) -> None:
        for flight, sent, err in self.ledger.failures():
            if err.permanent:
                self._remember(flight, sent, err, to_blame=self.isolated)
        log.warning("transaction aborted (%s); reading again from the committed offsets", why)
        self.metrics.transactions.labels("aborted").inc()
        self.state, self.rewind_needed = "aborting", True

    def _recover_step(self, rewind: bool = True) -> None:
        if self.state == "aborting":
            self.ledger.failures()  # the abort answers for them
            if not self.tx.abort(TX_CALL_S):
                return
            self._reset()
        if rewind and self.rewind_needed and self.consumer.rewind(TX_CALL_S):
            self.rewind_needed = False
            pending, self.alerts = self.alerts, []
            for key, value in pending:
                self.alert(key, value)

    def _finish_abort(self, timeout_s: float) -> None:
        """Abort now (inside a rebalance callback, or at shutdown); the rewind waits for
        the next turn, outside librdkafka's callback."""
        deadline = time.monotonic() + timeout_s
        while self.state == "aborting" and time.monotonic() < deadline:
            self._recover_step(rewind=False)
            self.turned()

    def _reset(self) -> None:
        if self.stats is not None:  # aborted: the events are read, and counted, again
            self.stats.clear()
        self.state, self.isolated = "idle", False
        self.offsets = {}
        self.events = 0
        self.ledger.clear()
        self.retry.clear()
        self.metrics.inflight.set(0)

    def _remember(self, flight: Flight, sent: Sent, err: SendError, to_blame: bool) -> None:
        """A record refused for good: a suspect, or, refused alone, to blame."""
        pos = flight.find(sent)
        if pos < 0:
            return
        out = flight.outputs[pos]
        kind, _, value, _, _, source = out
        if source < 0:  # an alert: dropped, not sent again
            self.alerts = [a for a in self.alerts if a[1] != value]
            self._drop(out, None, err)
            return
        marks = self.poison.setdefault(_coords(flight.msgs[source]), {})
        if to_blame:
            mark = {Kind.SHADOW: SHADOW_DROP, Kind.FALLBACK: MAIN_DROP}.get(kind, MAIN_FALLBACK)
            marks[mark] = err
        else:
            marks.setdefault(SUSPECT, err)

    def _cure(self, msgs: Sequence[Message], outputs: list[Output]) -> list[Output]:
        """This retry's outputs for records refused before: fallbacks, or nothing."""
        kept: list[Output] = []
        for out in outputs:
            kind, topic, _, _, _, source = out
            m = msgs[source] if source >= 0 else None
            marks = self.poison.get(_coords(m)) if m is not None else None
            if not marks or m is None:
                kept.append(out)
            elif kind is Kind.SHADOW:
                if SHADOW_DROP in marks:
                    self._drop(out, m, marks[SHADOW_DROP])
                else:
                    kept.append(out)
            elif MAIN_DROP in marks:
                self._drop(out, m, marks[MAIN_DROP])
            elif MAIN_FALLBACK in marks and kind is not Kind.FALLBACK:
                kept.append(carry(fallback(m, source, topic, marks[MAIN_FALLBACK],
                                           self.settings.dlq_topic, self.who, self.clock_ms(),
                                           refused_by_broker=True), self.who))  # fmt: skip
            else:
                kept.append(out)
        return kept

    def _forget_cured(self, committed: dict[TopicPartition, int]) -> None:
        self.poison = {c: v for c, v in self.poison.items()
                       if c[2] >= committed.get((c[0], c[1]), -1)}  # fmt: skip


def _coords(m: Message) -> Coordinates:
    return (m.topic() or "", m.partition() or 0, m.offset() or 0)
