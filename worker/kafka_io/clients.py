"""The worker's consumer: adaptive batches, explicit offset commits (asynchronous while
running, synchronous before partitions go and at shutdown), and a rewind to the
committed offsets for exactly-once mode. The producers are in producer.py and tx_producer.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from worker.config import Settings
from worker.delivery_terms import PRODUCER_MAX_BYTES, Guarantee
from worker.errors import KafkaFatalError
from worker.kafka_io.config import Role, client_config, connection, membership
from worker.kafka_io.fencing import Fences, fatal_line, is_fenced
from worker.kafka_io.watch import HEALTH_STATS_MS, BrokerWatch

log = logging.getLogger(__name__)


class Message(Protocol):
    """The parts of a consumed confluent_kafka Message the worker uses."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(
        self,
    ) -> dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None: ...
    def error(self) -> KafkaError | None: ...


#: An input partition: (topic, partition).
PartitionId = tuple[str, int]


def partition_id(m: Message) -> PartitionId:
    return (m.topic() or "", m.partition() or 0)


def next_offsets(msgs: Iterable[Message]) -> dict[PartitionId, int]:
    """The next offset to read per partition after ``msgs`` (a partition's come in order)."""
    return {(m.topic() or "", m.partition() or 0): (m.offset() or 0) + 1 for m in msgs}


def consumer_config(s: Settings) -> dict[str, Any]:
    """The worker's consumer. At most ``batch_wait_ms`` of fetch wait, so a batch never
    waits on the broker longer than on the loop; a prefetch queue of a few MiB (librdkafka
    keeps up to 64 MiB by default), which still holds a second of events at full speed.
    Exactly-once reads committed inputs only (read_committed, the role's fixed setting)."""
    tuning = {"fetch.wait.max.ms": max(1, min(100, s.batch_wait_ms)),
              "queued.max.messages.kbytes": 8192, "queued.min.messages": 20_000,
              # A full queue postpones the partition's next fetch by this much (librdkafka:
              # 1 s, which starves a worker that drains a backlog faster than that).
              "fetch.queue.backoff.ms": 10,
              "statistics.interval.ms": HEALTH_STATS_MS}
    role = Role.TX_CONSUMER if s.guarantee is Guarantee.EXACTLY_ONCE else Role.CONSUMER
    return client_config(role, connection(s, s.worker_id), tuning, member=membership(s))


def producer_config(s: Settings, record_limit: int | None = None) -> dict[str, Any]:
    """The worker's producer: a 1 ms linger (batches form by themselves while earlier ones
    are in flight; 0 cost a third of the draining rate in bench/worker_bench.py), a queue
    sized above the in-flight bound (so ``send`` never waits on it), and record batches no
    larger than the output topics accept. Exactly-once: the transactional id
    ``<group>-<instance_id>``, stable across restarts, and ``transaction_timeout_s``."""
    queue = max(100_000, 4 * (s.max_in_flight + s.batch_max))
    tuning: dict[str, Any] = {"linger.ms": 1, "queue.buffering.max.messages": queue,
                              "compression.type": "lz4",
                              "statistics.interval.ms": HEALTH_STATS_MS}
    if record_limit is not None:
        tuning["batch.size"] = min(PRODUCER_MAX_BYTES, record_limit)
    if s.guarantee is Guarantee.EXACTLY_ONCE:
        # librdkafka bounds its socket and delivery timeouts by the transaction's, so a
        # request to a broker that went away fails within it instead of after 60 s.
        tuning["transaction.timeout.ms"] = round(s.transaction_timeout_s * 1000)
        return client_config(Role.TX_PRODUCER, connection(s, s.worker_id), tuning,
                             fixed={"transactional.id": transactional_id(s)})
    return client_config(Role.PRODUCER, connection(s, s.worker_id), tuning)


def transactional_id(s: Settings) -> str:
    return f"{s.group}-{s.instance_id}"


def is_fatal(err: KafkaError) -> bool:
    """Errors no retry can fix: librdkafka's fatal ones and authentication failures. A
    consumer's fatal error (fenced static member) reaches ``consume`` as a message whose
    error is ``_FATAL`` but whose ``fatal()`` is False."""
    return bool(err.fatal()) or err.code() in (
        KafkaError._FATAL,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )


#: Commit errors worth another try within the same generation: the group is between two
#: steps of a rebalance, or its coordinator is moving or loading (a loaded machine makes
#: these windows longer: a clean rebalance then failed its commit and repeated events).
RETRY_COMMIT = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
    KafkaError.REQUEST_TIMED_OUT, KafkaError._WAIT_COORD, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
})
COMMIT_RETRY_S = 0.2
#: A consumer answering a seek of its own partitions with these can no longer consume.
UNUSABLE = frozenset({KafkaError._STATE, KafkaError._FATAL})


#: A consumer without partitions and without a broker connection this long, while the
#: producer has one, is replaced (``BrokerWatch.stranded``): well above a rebalance or a
#: broker restart, which end on their own.
STRANDED_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class CommitError:
    why: str
    retriable: bool


class BatchConsumer:
    """A consumer group member that hands out batches and commits explicit offsets."""

    def __init__(self, conf: Mapping[str, Any], topics: list[str],
                 on_change: Callable[[str, int], None],
                 watch: BrokerWatch | None = None) -> None:
        self.fatal: KafkaError | None = None
        self._on_change = on_change
        self._watch = watch
        self._owned: set[PartitionId] = set()
        #: Called from inside consume() before partitions are taken away (still ours)...
        self.before_revoke: Callable[[list[PartitionId]], None] | None = None
        #: ...or after they were lost (another member may own them already).
        self.after_lost: Callable[[list[PartitionId]], None] | None = None
        #: The outcome of each asynchronous commit: None, or why it failed.
        self.on_commit: Callable[[str | None], None] | None = None
        self._conf, self._topics = dict(conf), topics
        self._fences = Fences.of_member("kafka consumer", self._conf)
        self._fenced: KafkaError | None = None
        self._c = self._join()

    def _join(self) -> Consumer:
        c = Consumer({**self._conf, "error_cb": self._error, "on_commit": self._committed})
        c.subscribe(self._topics, on_assign=self._assigned, on_revoke=self._revoked,
                    on_lost=self._lost)
        return c

    def _rejoin(self, err: KafkaError) -> None:
        """Fenced: what this member owned is lost; a new consumer with the same instance id
        takes the membership back (or the process ends, see fencing.py)."""
        self._fenced = None
        self._fences.record(err)
        self._fresh()

    def _fresh(self) -> None:
        """A new consumer under the same member id; what this one owned is lost."""
        lost = sorted(self._owned)
        self._owned.clear()
        if self.after_lost is not None and lost:
            self.after_lost(lost)
        self._on_change("lost", 0)
        if self._watch is not None:
            self._watch.replaced("consumer")
        old, self._c = self._c, self._join()
        try:
            old.close()  # its callbacks are ignored from now on (not self._c)
        except (KafkaException, RuntimeError) as exc:
            log.debug("closing the replaced consumer: %s", exc)

    def _error(self, err: KafkaError) -> None:
        if is_fenced(err, self._conf):
            self._fenced = err
        elif is_fatal(err):
            self.fatal = err
        elif self._watch is None or not self._watch.error("consumer", err):
            log.warning("kafka consumer: %s", err)

    def _committed(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        if self.on_commit is not None:
            failed = [p for p in parts if p.error is not None]
            why = err.str() if err is not None else (str(failed[0].error) if failed else None)
            self.on_commit(why)

    # With cooperative rebalancing the callbacks carry only the partitions that
    # change, so the full assignment is tracked here.
    def _assigned(self, c: Consumer, parts: list[TopicPartition]) -> None:
        if c is not self._c:
            return  # a fenced consumer being closed
        self._owned |= {(p.topic, p.partition) for p in parts}
        self._on_change("assign", len(self._owned))

    def _revoked(self, c: Consumer, parts: list[TopicPartition]) -> None:
        if c is not self._c:
            return  # a fenced consumer being closed
        # Still the owner here: settle what was scored so the next owner starts after it.
        gone = [(p.topic, p.partition) for p in parts]
        if self.before_revoke is not None and gone:
            self.before_revoke(gone)
        self._owned -= set(gone)
        self._on_change("revoke", len(self._owned))

    def _lost(self, c: Consumer, parts: list[TopicPartition]) -> None:
        if c is not self._c:
            return  # a fenced consumer being closed
        lost = [(p.topic, p.partition) for p in parts]
        self._owned -= set(lost)
        if self.after_lost is not None and lost:
            self.after_lost(lost)
        self._on_change("lost", len(self._owned))

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """What is already buffered, up to ``max_messages``; only when nothing is, wait up
        to ``timeout_s`` for the first event (then take what came with it). Batches grow
        by themselves under load and shrink to one event when traffic is light.
        Error events are logged, or raised when fatal."""
        msgs = self._c.consume(max_messages, 0)
        if not msgs and timeout_s > 0:
            msgs = self._c.consume(1, timeout_s)
            if msgs and max_messages > 1:
                msgs += self._c.consume(max_messages - 1, 0)
        if self.fatal is not None:
            raise KafkaFatalError(fatal_line("kafka consumer", self.fatal, self._conf))
        good: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
            elif is_fenced(err, self._conf):
                self._fenced = err
            elif is_fatal(err):
                raise KafkaFatalError(fatal_line("kafka consumer", err, self._conf))
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consumer: %s", err.str())
        if self._fenced is not None:
            self._rejoin(self._fenced)
            return []  # read again from the committed offsets by the new member
        if not self._owned and self._watch is not None and self._watch.stranded(
                "consumer", "producer", STRANDED_S):
            log.warning("kafka consumer: no broker connection for %.0fs while the producer "
                        "has one, and no partitions: replacing it under the same member id",
                        STRANDED_S)
            self._fresh()
        return good

    def commit(self, offsets: Mapping[PartitionId, int],
               asynchronous: bool = False, retry_s: float = 0.0) -> str | None:
        """Commit the next offset to read per owned (topic, partition).

        Synchronous: None on success, else why it failed; an error worth another try (a
        rebalance in progress, the coordinator moving or loading) is tried again for up
        to ``retry_s``. Asynchronous: None at once, the outcome goes to ``on_commit``
        from a later poll. A fatal error raises.
        """
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in self._owned]
        if not tps:
            return None
        if asynchronous:
            failed = self._commit(tps, asynchronous=True)
            return None if failed is None else failed.why
        deadline = time.monotonic() + retry_s
        while True:
            err = self._commit(tps, asynchronous=False)
            if err is None or not err.retriable or time.monotonic() >= deadline:
                return None if err is None else err.why
            time.sleep(COMMIT_RETRY_S)

    def _commit(self, tps: list[TopicPartition], asynchronous: bool) -> CommitError | None:
        try:
            if asynchronous:
                done = self._c.commit(offsets=tps, asynchronous=True)
            else:
                done = self._c.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and is_fenced(err, self._conf):
                self._fenced = err  # the next poll rejoins
            elif isinstance(err, KafkaError) and is_fatal(err):
                raise KafkaFatalError(f"kafka commit: {err.str()}") from exc
            return CommitError(str(exc), isinstance(err, KafkaError)
                               and err.code() in RETRY_COMMIT)
        failed = [tp.error for tp in done or [] if tp.error is not None]
        if failed:  # refused per partition, the request itself answered
            return CommitError(str(failed[0]), failed[0].code() in RETRY_COMMIT)
        return None

    def group_metadata(self) -> object:
        """The group's generation, for offsets committed inside a transaction (KIP-447)."""
        return self._c.consumer_group_metadata()

    def rewind(self, timeout_s: float) -> bool:
        """Seek every owned partition back to its committed offset (after an aborted
        transaction: its events are read again); False when the broker did not answer
        within ``timeout_s`` (call again)."""
        owned = [TopicPartition(t, p) for t, p in sorted(self._owned)]
        try:
            for tp in self._c.committed(owned, timeout=timeout_s) if owned else []:
                start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                self._c.seek(TopicPartition(tp.topic, tp.partition, start))
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() in UNUSABLE:
                self._rejoin(self._unusable(err))
                return True  # the new member starts from the committed offsets anyway
            log.warning("cannot rewind to the committed offsets yet: %s", exc)
            return False
        return True

    def _unusable(self, err: KafkaError) -> KafkaError:
        """Why a consumer refuses to seek its own partitions ("Local: Erroneous state"):
        its membership was taken while the loop did not poll, so the fence itself (an
        error event) was never served. For a static member that is a fence: another
        process joined with this one's instance id (seen: the loop rewinding after an
        aborted transaction spun on this refusal, 360,000 times in 85 s, and never
        learned it)."""
        if not self._conf.get("group.instance.id"):
            return err
        return KafkaError(KafkaError.FENCED_INSTANCE_ID,
                          f"the consumer can no longer seek ({err.str()}): its static "
                          "membership was taken (group.instance.id)")

    def seek(self, positions: Mapping[PartitionId, int]) -> None:
        """Read these partitions again from these offsets (a batch split in two)."""
        for (t, p), o in positions.items():
            self._c.seek(TopicPartition(t, p, o))

    def close(self) -> None:
        """Leave the group at once so its partitions move to the other workers."""
        self._c.close()
