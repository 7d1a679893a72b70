"""The transactional producer of exactly-once mode: a transaction per batch, and calls
that may hang (a broker restart) run in a thread of their own and are given up on within
a bound, so the loop stays in charge of waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from worker.delivery_terms import Headers, OnDelivery, OutRecord, Sent, TxState
from worker.errors import KafkaFatalError, SendError, SendFailure
from worker.kafka_io.clients import PartitionId
from worker.kafka_io.fencing import Fences
from worker.kafka_io.producer import FENCED_CODES, BatchProducer, fatal_line
from worker.kafka_io.watch import BrokerWatch

log = logging.getLogger(__name__)


#: The transaction timeout when the configuration has none (librdkafka's default 60 s).
_DEFAULT_TX_TIMEOUT_MS = 60_000


@dataclass(frozen=True, slots=True)
class TxTimeouts:
    """How long transactional calls may take, from the producer's ``transaction.timeout.ms``
    (the worker's ``transaction_timeout_s``)."""

    #: The longest a transactional call runs in the background before it reports a timeout.
    call_s: float
    #: A call still running this long after it started hangs (librdkafka has been seen to
    #: wait forever in send_offsets_to_transaction after its broker restarted): the
    #: producer is replaced, and the new one's init_transactions aborts the transaction.
    stuck_s: float

    @classmethod
    def of(cls, conf: Mapping[str, Any]) -> TxTimeouts:
        call_s = int(conf.get("transaction.timeout.ms", _DEFAULT_TX_TIMEOUT_MS)) / 1000
        # Past the transaction timeout the broker has aborted the transaction anyway.
        return cls(call_s, call_s * 1.5)


#: A transactional call pending this long starts probing whether a broker answers.
PROBE_AFTER_S = 2.0
PROBE_TIMEOUT_S = 0.5
#: Pending this long after a broker answered again: hung (a healthy send_offsets and
#: commit take well under a second once their coordinator is back).
HUNG_AFTER_BROKER_S = 4.0


class BackgroundCall:
    """One call on a daemon thread: librdkafka does not always honour a transactional
    call's timeout while a request to a vanished broker is in flight, so the loop waits
    for the result a second at a time instead of inside the call."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn, self._done = fn, threading.Event()
        self.started = time.monotonic()
        #: When a broker first answered a metadata request while this call was pending.
        self.broker_seen: float | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="kafka-tx", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:  # handed to the loop's thread by result()
            self._error = exc
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout_s: float) -> tuple[bool, Any]:
        """(finished, its result); raises what the call raised."""
        if not self._done.wait(timeout_s):
            return False, None
        if self._error is not None:
            raise self._error
        return True, self._result


def hang_reason(call: BackgroundCall, stuck_s: float,
                broker_answers: Callable[[], bool]) -> str | None:
    """Why a pending call counts as hung, or None: pending past ``stuck_s``, or still
    pending ``HUNG_AFTER_BROKER_S`` after ``broker_answers`` said a broker is back (asked
    each time once the call has been pending ``PROBE_AFTER_S``: the worker's /readyz
    follows the answers). The worker's ``TxProducer`` and the monitor's ``TxLoop``
    (tx_bound.py) both judge by it."""
    now = time.monotonic()
    pending = now - call.started
    if pending > stuck_s:
        return f"pending {pending:.0f}s, past {stuck_s:.0f}s"
    if pending < PROBE_AFTER_S:
        return None
    if broker_answers() and call.broker_seen is None:
        call.broker_seen = now
    if call.broker_seen is not None and now - call.broker_seen >= HUNG_AFTER_BROKER_S:
        return f"pending {pending:.0f}s, {now - call.broker_seen:.0f}s after a broker answered"
    return None


def probe_broker(producer: Producer, pending: BackgroundCall | None,
                 ) -> tuple[BackgroundCall | None, bool]:
    """Whether a broker answers a metadata request of ``producer``, asked on a thread of
    its own and waited for at most about a second: on a producer whose transactional call
    hangs, the request itself may wait as long as the call (a worker of the second chaos
    hour went silent for 7 minutes, until its hung call returned). A request still out is
    waited for again, not sent twice. Returns the request still out (or None) and the
    answer."""
    probe = pending or BackgroundCall(lambda: producer.list_topics(timeout=PROBE_TIMEOUT_S))
    try:
        done, _ = probe.result(PROBE_TIMEOUT_S + 0.5)
    except KafkaException:
        return None, False
    return (None, True) if done else (probe, False)


class TxProducer(BatchProducer):
    """A transactional producer: outputs and input offsets commit together or not at all.

    Its transactional id is stable per worker instance, so ``init_transactions`` of a
    restarted worker fences its killed predecessor and aborts what it left open. A
    producer that hits a fatal error is replaced (``abort`` does it) by a new one with
    the same id, whose ``init_transactions`` aborts the broken one's transaction; only
    being fenced by another live worker with the same id ends the process. The calls
    that talk to the transaction coordinator run on a thread of their own: ``commit``
    and ``abort`` wait at most their timeout, then say "not yet".
    """

    def __init__(self, conf: Mapping[str, Any], watch: BrokerWatch | None = None,
                 init_timeout_s: float = 60.0) -> None:
        super().__init__(conf, watch)
        self._timeouts = TxTimeouts.of(conf)
        tid = str(conf.get("transactional.id"))
        self._fences = Fences(tid, lambda err, n: fatal_line(err, self._conf, n))
        #: The producer whose open transaction holds the input offsets already.
        self._offsets_sent: Producer | None = None
        #: Why the current producer cannot go on (a fatal error), or None.
        self._broken: str | None = None
        self._fenced: KafkaError | None = None
        self._call: BackgroundCall | None = None
        self._probe: BackgroundCall | None = None  # a metadata request still out
        #: When this transaction's first commit attempt began (None: not committing).
        self._committing_since: float | None = None
        self._p.init_transactions(init_timeout_s)

    def _new(self) -> Producer:
        # Each producer reports its own errors: one that was replaced (and is fenced by
        # its successor) must not end the process.
        self._generation = getattr(self, "_generation", 0) + 1
        if self._generation > 1 and self._watch is not None:
            self._watch.replaced("producer")
        return Producer({**self._conf, "error_cb": partial(self._error_of, self._generation)})

    def _error_of(self, generation: int, err: KafkaError) -> None:
        if generation == self._generation:
            self._error(err)

    def _error(self, err: KafkaError) -> None:
        if err.fatal():
            self._broke(err)
        else:
            super()._error(err)

    def _broke(self, err: KafkaError) -> None:
        """This producer cannot go on: the next commit aborts and replaces it."""
        self._broken = err.str()
        if err.code() in FENCED_CODES:
            # Another live process with this id, or the broker bumped the epoch when it
            # aborted a transaction past its timeout (an outage): counted when replaced.
            self._fenced = err

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None, on_delivery: OnDelivery, tag: int) -> None:
        if self._broken is not None:  # the transaction is lost anyway: make the loop abort
            on_delivery(tag, SendError(SendFailure.TRANSIENT, self._broken),
                        (topic, value, key))
            return
        super().send(topic, value, key, headers, on_delivery, tag)

    def send_all(self, records: Sequence[OutRecord], on_delivery: OnDelivery,
                 first_tag: int) -> None:
        if self._broken is not None:  # each is refused at once (see send)
            for tag, r in enumerate(records, first_tag):
                self.send(r.topic, r.value, r.key, r.headers, on_delivery, tag)
            return
        super().send_all(records, on_delivery, first_tag)

    def _refused(self, exc: KafkaException, sent: Sent, on_delivery: OnDelivery,
                 tag: int) -> None:
        err = exc.args[0]
        # A produce() refused after a fatal error says only _FATAL ("Local: Fatal error");
        # its cause (a fence) came through error_cb.
        if isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL):
            if self._broken is None:
                self._broke(err)
            on_delivery(tag, SendError(SendFailure.TRANSIENT, err.str()), sent)
            return
        super()._refused(exc, sent, on_delivery, tag)

    def poll(self, timeout_s: float) -> None:
        if self._call is not None and not self._call.done():
            self._call.result(timeout_s)  # its thread serves the callbacks meanwhile
            return
        try:
            super().poll(timeout_s)
        except KafkaException as exc:  # a fenced producer's poll raises its fatal error
            err = exc.args[0]
            if not isinstance(err, KafkaError) or not err.fatal():
                raise
            self._broke(err)  # the next commit aborts and replaces it

    def begin(self) -> None:
        self._offsets_sent, self._committing_since = None, None
        if self._broken is not None:
            return  # the next commit says ABORT
        try:
            self._p.begin_transaction()
        except KafkaException as exc:
            self._broken = str(exc)

    def commit(self, offsets: Mapping[PartitionId, int], group: object,
               timeout_s: float) -> TxState:
        """Add the input offsets (once) and commit, waiting at most ``timeout_s``."""
        if self._broken is not None and self._call is None:
            return TxState.ABORT
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        producer = self._p
        now = time.monotonic()
        self._committing_since = self._committing_since or now
        done, result = self._wait(lambda: self._commit_now(producer, tps, group), timeout_s,
                                  TxState.ABORT)
        state = result if done else TxState.PENDING
        if state is TxState.PENDING and now - self._committing_since > self._timeouts.stuck_s:
            # Each attempt returned "retry" (a timeout): after a broker pause librdkafka
            # kept partitions whose leader it had lost ("new leader-1 not found in cache")
            # and every commit timed out flushing to them, for minutes (a chaos run); past
            # the transaction timeout the broker has aborted the transaction anyway.
            log.warning("the transaction has not committed in %.0fs of attempts; replacing "
                        "the producer", now - self._committing_since)
            self._call, self._broken = None, "its commit kept timing out"
            state = TxState.ABORT
        if state is not TxState.PENDING:
            self._committing_since = None
        return state  # type: ignore[no-any-return]

    def _commit_now(self, p: Producer, tps: list[TopicPartition], group: object) -> TxState:
        """On the producer the call began with, never ``self._p``: a call given up as hung
        goes on in its thread, and once it returned it would commit the next producer's
        transaction with no input offsets in it (its outputs visible, the input read
        again later: the hour chaos run's 836,500 duplicates)."""
        try:
            if self._offsets_sent is not p and tps:
                p.send_offsets_to_transaction(tps, group, self._timeouts.call_s)
            self._offsets_sent = p
            p.commit_transaction(self._timeouts.call_s)
        except KafkaException as exc:
            return self._verdict(exc) if p is self._p else TxState.ABORT
        return TxState.COMMITTED

    def abort(self, timeout_s: float) -> bool:
        """Abort the open transaction, or replace a broken producer; False when that did
        not finish within the timeout (call again)."""
        producer = self._p
        done, result = self._wait(lambda: self._abort_now(producer), timeout_s, False)
        return bool(done and result)

    def _abort_now(self, p: Producer) -> bool:
        if self._broken is None:
            try:
                p.abort_transaction(self._timeouts.call_s)
                return True
            except KafkaException as exc:
                if self._verdict(exc) is TxState.PENDING:
                    return False
                self._broken = self._broken or str(exc)  # abort refused: start afresh
        if self._fenced is not None:
            fenced, self._fenced = self._fenced, None
            self._fences.record(fenced)  # raises when it keeps happening
        if p is not self._p:
            return False  # given up as hung: the producer was replaced meanwhile
        log.warning("transactional producer failed (%s); replacing it", self._broken)
        fresh = self._new()
        try:
            fresh.init_transactions(self._timeouts.call_s)
        except KafkaException as exc:
            if self._verdict(exc) is TxState.PENDING:
                return False
            raise KafkaFatalError(f"kafka transactions: {exc}") from exc
        if p is not self._p:
            return False
        self._p, self._broken = fresh, None
        return True

    def _wait(self, fn: Callable[[], Any], timeout_s: float,
              if_stuck: Any) -> tuple[bool, Any]:
        """Start ``fn`` in the background unless a call is still running; its result if
        it finishes within ``timeout_s``; ``if_stuck`` once the call hangs."""
        if self._call is None:
            self._call = BackgroundCall(fn)
        done, result = self._call.result(timeout_s)
        if done:
            self._call = None
        elif self._hung(self._call):
            log.warning("a transactional call has hung for %.0fs; replacing the producer",
                        time.monotonic() - self._call.started)
            self._call, self._broken = None, "a transactional call hung"
            return True, if_stuck
        return done, result

    def _hung(self, call: BackgroundCall) -> bool:
        """Whether a pending call hangs: past ``stuck_s``, or still pending
        ``HUNG_AFTER_BROKER_S`` after a broker answered again. librdkafka's
        send_offsets_to_transaction does not always notice that its coordinator came back
        (librdkafka#5456: the coordinator request's timeout is never checked), and while
        it hangs no callback is served: /readyz went 503 for 13 s after a broker restart
        had already been seen. A metadata request on another thread of the same client
        answers whether the broker is back (and tells the watch, for /readyz)."""
        return hang_reason(call, self._timeouts.stuck_s, self._broker_answers) is not None

    def _broker_answers(self) -> bool:
        self._probe, answered = probe_broker(self._p, self._probe)
        if answered and self._watch is not None:
            self._watch.answered("producer")
        return answered

    def _verdict(self, exc: KafkaException) -> TxState:
        err = exc.args[0]
        if not isinstance(err, KafkaError):
            raise KafkaFatalError(f"kafka transaction: {exc}") from exc
        if err.code() in FENCED_CODES:
            self._broke(err)
            return TxState.ABORT
        if err.txn_requires_abort():
            return TxState.ABORT
        if not err.fatal() and (err.retriable() or err.code() == KafkaError._TIMED_OUT):
            return TxState.PENDING
        self._broken = err.str()
        return TxState.ABORT
