"""Exactly-once processing for the monitor: consume, produce and commit offsets in one
Kafka transaction per batch (reading state back from the changelog topics:
worker/kafka_io/changelog.py).

A batch's outputs (changelog records, partials, metrics, alerts) and its input
offsets become visible together or not at all, so a process killed at any point
restarts from a state consistent with its committed offsets.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from worker.delivery_terms import Headers
from worker.errors import KafkaFatalError
from worker.kafka_io.clients import Message, PartitionId, is_fatal, next_offsets
from worker.kafka_io.config import Connection, Membership, Role, client_config
from worker.kafka_io.fencing import Fences, fatal_line, is_fenced
from worker.kafka_io.producer import fatal_line as producer_fatal_line
from worker.kafka_io.tx_bound import TransactionHung, run_on
from worker.kafka_io.watch import BrokerWatch, reporting

log = logging.getLogger(__name__)
Partitions = list[PartitionId]
_TX_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})
#: Times the committed offsets are asked for after an abort, and each ask's bound, before
#: a new consumer takes over (its assignment fetches them in the background, so the loop
#: keeps turning and hears a stop): a restarted broker's coordinator takes seconds to a
#: minute to load, and CI's chaos test once saw a minute and a half of timeouts.
COMMITTED_ATTEMPTS: Final = 2
COMMITTED_TIMEOUT_S: Final = 10.0
#: The abort's bound; after it the producer is replaced (whose init aborts instead). Kept
#: with the asks above under the stop's grace (60 s, worker/shutdown.py).
ABORT_TIMEOUT_S: Final = 30.0
#: What the committed-offsets request gets while the group coordinator is away or moving.
_COORDINATOR_AWAY = frozenset({KafkaError._TIMED_OUT, KafkaError.NOT_COORDINATOR,
                               KafkaError.COORDINATOR_NOT_AVAILABLE,
                               KafkaError.COORDINATOR_LOAD_IN_PROGRESS})


class TxLoop:
    """One group member and one transactional producer (KIP-447 fencing by group)."""

    def __init__(
        self, conn: Connection, member: Membership, transactional_id: str,
        on_assign: Callable[[Partitions], None], on_revoke: Callable[[Partitions], None],
        stopping: Callable[[], bool] = lambda: False, watch: BrokerWatch | None = None,
    ) -> None:
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._watch = watch
        #: Whether the process is stopping: a recovery then rebuilds nothing (a restart
        #: replays from the committed offsets), so it cannot outlast the stop's grace.
        self._stopping = stopping
        self._tx_conf = reporting(client_config(Role.TX_PRODUCER, conn, fixed={
            "transactional.id": transactional_id}), watch, "producer")
        self._p = Producer(self._tx_conf)
        self._tx_fences = Fences(transactional_id,
                                 lambda err, n: producer_fatal_line(err, self._tx_conf, n))
        # A restart with the same transactional.id aborts what the dead process left open.
        self._p.init_transactions(60)
        self._conf = reporting(client_config(Role.TX_CONSUMER, conn, member=member), watch,
                               "consumer")
        self._c = Consumer(self._conf)
        self._fences = Fences.of_member("kafka consumer", self._conf)
        self._topics: list[str] = []
        self._open = False
        #: Why a send failed in the open transaction (its commit then aborts instead).
        self._failed: KafkaException | None = None
        self.opened_at = 0.0
        #: Next offset per (topic, partition) of what was polled in the open transaction.
        self._offsets: dict[PartitionId, int] = {}
        self.polled_messages = 0

    def subscribe(self, topics: list[str]) -> None:
        """(Re)subscribe; a topic added later (it was created meanwhile) joins the group's
        assignment at the rebalance this starts.

        The same list again is a no-op: a second subscribe while the first JoinGroup is in
        flight left a phantom pending member (seen on Kafka 4.1 with librdkafka 2.16), and the
        next rebalance then waited a whole session timeout (45 s) for it."""
        if topics == self._topics:
            return
        self._topics = list(topics)
        self._c.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked,
                          on_lost=self._revoked)

    def existing(self, topics: list[str]) -> set[str]:
        """Which of ``topics`` exist (with partitions) on the cluster now."""
        md = self._c.list_topics(timeout=5)
        return {t for t in topics if t in md.topics and md.topics[t].error is None
                and md.topics[t].partitions}

    def partition_count(self, topic: str) -> int:
        return len(self._c.list_topics(topic, timeout=10).topics[topic].partitions)

    def lag(self, topics: set[str]) -> dict[str, int]:
        """Messages behind the end of the partitions of ``topics`` assigned here."""
        out = dict.fromkeys(topics, 0)
        owned = [tp for tp in self._c.assignment() if tp.topic in topics]
        for tp in self._c.position(owned) if owned else []:
            _low, high = self._c.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                out[tp.topic] += max(0, high - tp.offset)
        return out

    def committed(self, topic: str, partition: int) -> int:
        """The group's committed offset of one partition (where the loop resumes); -1
        when the group has none (the loop then starts at the partition's beginning)."""
        tp = self._c.committed([TopicPartition(topic, partition)], timeout=30)[0]
        return int(tp.offset) if tp.offset >= 0 else -1

    def _assigned(self, c: Consumer, parts: list[TopicPartition]) -> None:
        if c is self._c:  # not a fenced consumer being closed
            self._on_assign([(p.topic, p.partition) for p in parts])

    def _revoked(self, c: Consumer, parts: list[TopicPartition]) -> None:
        if c is self._c:
            self._on_revoke([(p.topic, p.partition) for p in parts])

    def _rejoin(self, err: KafkaError) -> None:
        """Fenced (see fencing.py): drop what this member owned and its open transaction;
        a new consumer with the same instance id takes the membership back."""
        self._fences.record(err)
        self._on_revoke([(tp.topic, tp.partition) for tp in self._c.assignment()])
        if self._open and not self._aborted():
            self._fresh_producer()
        self._open, self._offsets, self.polled_messages = False, {}, 0
        self._failed = None
        self._fresh_consumer()

    def _fresh_consumer(self) -> None:
        """A new consumer under the same member id: it takes the membership back, and its
        assignment restores the state and resumes from the committed offsets."""
        if self._watch is not None:
            self._watch.replaced("consumer")
        old, self._c = self._c, Consumer(self._conf)
        self._c.subscribe(self._topics, on_assign=self._assigned, on_revoke=self._revoked,
                          on_lost=self._revoked)
        try:
            old.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("closing the replaced consumer: %s", exc)

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        good: list[Message] = []
        for m in self._c.consume(max_messages, timeout_s):
            err = m.error()
            if err is None:
                good.append(m)
            elif is_fenced(err, self._conf):
                self._rejoin(err)
                return []
            elif is_fatal(err):
                raise KafkaFatalError(fatal_line("kafka consumer", err, self._conf))
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer: %s", err.str())
        if good and not self._offsets and not self._open:
            self.opened_at = time.monotonic()
        self.polled_messages += len(good)
        self._offsets.update(next_offsets(good))
        return good


    def send(self, topic: str, key: bytes | None, value: bytes | None,
             partition: int | None = None,
             on_delivery: Callable[[Any, Any], None] | None = None,
             headers: Headers | None = None) -> None:
        if self._failed is not None:
            return  # the transaction is lost anyway: its commit aborts and replays
        extra: dict[str, Any] = {} if on_delivery is None else {"on_delivery": on_delivery}
        if partition is not None:
            extra["partition"] = partition
        if headers:
            extra["headers"] = headers
        try:
            if not self._open:
                self._p.begin_transaction()
                self._open = True
                self.opened_at = time.monotonic()
            while True:
                try:
                    self._p.produce(topic, value, key, **extra)
                    return
                except BufferError:
                    self._p.poll(0.05)
        except KafkaException as exc:
            # A transaction in an abortable error state refuses every produce ("Local:
            # Erroneous state"; the chaos run's monitor ended on it after a broker
            # outage): the next commit aborts it and replays from the committed offsets.
            self._failed = exc
            self._open = True

    def open_for(self) -> float:
        """Seconds since the transaction in progress began (its first poll or output)."""
        return time.monotonic() - self.opened_at if self._open or self._offsets else 0.0

    def commit(self, final_s: float | None = None) -> bool:
        """Commit the transaction's outputs and the offsets of everything polled since the
        last commit, atomically.

        False when the transaction had to be aborted (typically a rebalance changed the
        group's generation): the caller's state was then rebuilt from the changelogs and
        the consumer rewound to the committed offsets, so the batch is processed again.
        A fatal error raises; the process exits and a restart resumes from the last
        committed transaction.

        ``final_s``: the last commit before the process stops, bounded by that many
        seconds in all; on failure nothing is rebuilt (a restart replays the transaction
        from the committed offsets), so a broker that is away cannot hold the stop.
        """
        if not self._offsets and not self._open:
            return True
        if final_s is not None:
            return self._final_commit(final_s)
        try:
            self._end_transaction(lambda default_s: default_s)
        except TransactionHung as exc:
            log.warning("a transactional call hung (%s); replacing the producer and replaying "
                        "from the committed offsets", exc)
            try:
                self._recover(fresh_producer=True)
            except KafkaException as again:
                raise KafkaFatalError(f"kafka transaction recovery: {again}") from again
            return False
        except KafkaException as exc:
            err = exc.args[0]
            if not isinstance(err, KafkaError):
                raise KafkaFatalError(f"kafka transaction: {exc}") from exc
            fenced = err.code() in _TX_FENCED
            if fenced:  # another process with this id, or the broker's timeout abort
                self._tx_fences.record(err)  # raises when it keeps happening
            # A fatal error leaves the producer unusable: a new one under the same id
            # (whose init fails the same way if the cause is lasting, ending the process).
            log.warning("transaction aborted, replaying from committed offsets: %s", err.str())
            try:
                self._recover(fresh_producer=fenced or err.fatal())
            except KafkaException as again:  # cannot even rewind: crash-only from here
                raise KafkaFatalError(f"kafka transaction recovery: {again}") from again
            return False
        finally:
            self._open = False
        return True

    def _end_transaction(self, bound: Callable[[float], float]) -> None:
        """Begin if need be, add the polled offsets, commit; each call's timeout is its
        default (send 30 s, commit 60 s) through ``bound``. A refused call raises."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        if not self._open:
            self._p.begin_transaction()
        last, self._offsets = self._offsets, {}
        self.polled_messages = 0
        producer = self._p  # a hung call goes on in its thread: never on a successor
        if last:
            offsets = [TopicPartition(t, p, o) for (t, p), o in last.items()]
            meta = self._c.consumer_group_metadata()
            send_s = bound(30)
            run_on(producer, lambda: producer.send_offsets_to_transaction(
                offsets, meta, send_s), send_s)
        commit_s = bound(60)
        run_on(producer, lambda: producer.commit_transaction(commit_s), commit_s)
        producer.poll(0)  # delivery callbacks of the committed records

    def _final_commit(self, budget_s: float) -> bool:
        deadline = time.monotonic() + budget_s

        def left(default_s: float) -> float:
            return max(0.1, min(default_s, deadline - time.monotonic()))

        try:
            self._end_transaction(left)
            return True
        except TransactionHung as exc:  # its producer is not asked to abort: it would hang
            log.warning("the last transaction before stopping hung (%s): a restart replays "
                        "it from the committed offsets", exc)
            return False
        except KafkaException as exc:
            log.warning("the last transaction before stopping did not commit within %.0fs "
                        "(%s): a restart replays it from the committed offsets", budget_s, exc)
            with contextlib.suppress(KafkaException):  # else the broker aborts it later
                self._p.abort_transaction(left(60))
            return False
        finally:
            self._offsets, self._failed, self._open = {}, None, False

    def _recover(self, fresh_producer: bool = False) -> None:
        """Abort (a fenced producer: replace it, the new one's init aborts), drop the
        in-memory state, rewind to the committed offsets, restore."""
        if (fresh_producer or not self._aborted()) and not self._stopping():
            self._fresh_producer()
        self._offsets, self._failed = {}, None
        self.polled_messages = 0
        owned = self._c.assignment()
        parts = [(tp.topic, tp.partition) for tp in owned]
        self._on_revoke(parts)
        committed = self._committed(owned)
        if self._stopping():
            log.warning("stopping during the recovery from an aborted transaction; a restart "
                        "resumes from the committed offsets")
            return
        if committed is None:
            log.warning("the group coordinator did not give the committed offsets in %d "
                        "tries; a new consumer under the same member id resumes from them",
                        COMMITTED_ATTEMPTS)
            self._fresh_consumer()
            return
        for tp in committed:
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._c.seek(TopicPartition(tp.topic, tp.partition, start))
        try:
            self._on_assign(parts)
        except KafkaException as exc:  # CI's chaos test: "Local: Unknown partition"
            log.warning("restoring the state after the abort failed (%s); a new consumer "
                        "under the same member id restores it", exc)
            self._on_revoke(parts)
            self._fresh_consumer()

    def _committed(self, owned: list[TopicPartition]) -> list[TopicPartition] | None:
        """The group's committed offsets, asked again while the coordinator is away or
        moving (a broker just restarted: the chaos runs' monitors ended on "Failed to get
        committed offsets: Local: Timed out", and on "Broker: Not coordinator"); None when
        it never answered, or the process is stopping. Any other error raises."""
        for attempt in range(COMMITTED_ATTEMPTS):
            if self._stopping():
                return None
            try:
                return list(self._c.committed(owned, timeout=COMMITTED_TIMEOUT_S))
            except KafkaException as exc:
                err = exc.args[0]
                if not isinstance(err, KafkaError) or err.fatal() or \
                        err.code() not in _COORDINATOR_AWAY:
                    raise
                log.warning("reading the committed offsets failed (%s)%s", err.str(),
                            "; asking again" if attempt + 1 < COMMITTED_ATTEMPTS else "")
        return None

    def _fresh_producer(self) -> None:
        """A new producer under the same transactional id; its init aborts what the old
        one left open."""
        if self._watch is not None:
            self._watch.replaced("producer")
        self._p = Producer(self._tx_conf)
        self._p.init_transactions(60)

    def _aborted(self) -> bool:
        """Abort the open transaction; False when this producer cannot (a broker outage
        can leave it fenced by the broker's own timeout abort, or its transaction in a
        state the coordinator refuses): it is then replaced, and the new producer's
        init_transactions aborts the transaction instead (seen in the chaos run: the
        monitor ended on "Failed to end transaction" after a broker stop)."""
        try:
            self._p.abort_transaction(ABORT_TIMEOUT_S)
            return True
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() in _TX_FENCED:
                self._tx_fences.record(err)  # raises when it keeps happening
            log.warning("aborting the transaction failed (%s); starting a new transactional "
                        "producer under the same id", exc)
            return False

    def close(self) -> None:
        if self._open:
            self._aborted()  # else the broker aborts it after the transaction timeout
        self._c.close()
