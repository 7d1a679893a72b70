"""The worker's producers: every output gets its own delivery report, classified as a
``SendError`` (too large, refused for good, or worth another try), and the
transactional variant of exactly-once mode.

Nothing here blocks longer than the timeout it is given: the loop stays in charge
of waiting, so its probes keep answering while outputs wait for the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from worker.errors import KafkaFatalError, SendError, SendFailure
from worker.kafka_io.clients import Headers, is_fatal
from worker.kafka_io.watch import BrokerWatch

log = logging.getLogger(__name__)
Sent = tuple[str, bytes | None, bytes | None]
OnDelivery = Callable[[SendError | None, Sent | None], None]

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
                        KafkaError.INVALID_MSG_SIZE})  # fmt: skip
#: Refusals that the same record would get again, whenever it is sent.
_REJECTED = frozenset({KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
                       KafkaError.INVALID_TIMESTAMP, KafkaError.POLICY_VIOLATION,
                       KafkaError._INVALID_ARG})  # fmt: skip


def classify(err: KafkaError) -> SendError:
    code = err.code()
    if code in _TOO_LARGE:
        return SendError(SendFailure.TOO_LARGE, err.str())
    if code in _REJECTED:
        return SendError(SendFailure.REJECTED, err.str())
    return SendError(SendFailure.TRANSIENT, err.str())


def _report(on_delivery: OnDelivery, err: KafkaError | None, msg: Any) -> None:
    if err is None:
        on_delivery(None, None)
    else:
        on_delivery(classify(err), (msg.topic() or "", msg.value(), msg.key()))


class BatchProducer:
    """An idempotent producer with a delivery report per output."""

    def __init__(self, conf: Mapping[str, Any], watch: BrokerWatch | None = None) -> None:
        self.fatal: KafkaError | None = None
        self._watch = watch
        self._conf = {**conf, "error_cb": self._error}
        self._p = Producer(self._conf)
        # The loop passes one callback for a batch's records: wrap it once, not per record.
        self._last: tuple[OnDelivery | None, Any] = (None, None)

    def _error(self, err: KafkaError) -> None:
        if is_fatal(err):
            self.fatal = err
        elif self._watch is None or not self._watch.error("producer", err):
            log.warning("kafka producer: %s", err)

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None, on_delivery: OnDelivery) -> None:  # fmt: skip
        """Queue one output; ``on_delivery`` gets the broker's verdict (from ``poll``), or
        at once when the client refuses it (larger than ``message.max.bytes``)."""
        cb, report = self._last
        if cb is not on_delivery:
            report = partial(_report, on_delivery)
            self._last = (on_delivery, report)
        while True:
            try:
                self._p.produce(topic, value, key, headers=headers, on_delivery=report)
                return
            except BufferError:
                self._p.poll(0.05)  # the queue is sized above the in-flight bound: rare
            except KafkaException as exc:
                self._refused(exc, (topic, value, key), on_delivery)
                return

    def _refused(self, exc: KafkaException, sent: Sent, on_delivery: OnDelivery) -> None:
        err = exc.args[0]
        if not isinstance(err, KafkaError) or is_fatal(err):
            raise KafkaFatalError(f"kafka producer: {exc}") from exc
        on_delivery(classify(err), sent)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports, waiting at most ``timeout_s`` for the first one."""
        self._p.poll(timeout_s)
        if self.fatal is not None:
            raise KafkaFatalError(f"kafka producer: {self.fatal.str()}")


class TxState(StrEnum):
    COMMITTED = "committed"
    #: Not finished within the timeout (the broker is slow or away): call commit again.
    PENDING = "pending"
    #: The transaction failed: call ``abort`` until it returns True (then read again).
    ABORT = "abort"


_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


class TxProducer(BatchProducer):
    """A transactional producer: outputs and input offsets commit together or not at all.

    Its transactional id is stable per worker instance, so ``init_transactions`` of a
    restarted worker fences its killed predecessor and aborts what it left open. A
    producer that hits a fatal error is replaced (``abort`` does it) by a new one with
    the same id, whose ``init_transactions`` aborts the broken one's transaction; only
    being fenced by another live worker with the same id ends the process.
    """

    def __init__(self, conf: Mapping[str, Any], watch: BrokerWatch | None = None,
                 init_timeout_s: float = 60.0) -> None:  # fmt: skip
        super().__init__(conf, watch)
        self._offsets_sent = False
        #: Why the current producer cannot go on (a fatal error), or None.
        self._broken: str | None = None
        self._spare: Producer | None = None
        self._p.init_transactions(init_timeout_s)

    def _error(self, err: KafkaError) -> None:
        if err.fatal() and err.code() not in _FENCED:
            self._broken = err.str()
        else:
            super()._error(err)

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None, on_delivery: OnDelivery) -> None:  # fmt: skip
        if self._broken is not None:  # the transaction is lost anyway: make the loop abort
            on_delivery(SendError(SendFailure.TRANSIENT, self._broken), (topic, value, key))
            return
        super().send(topic, value, key, headers, on_delivery)

    def _refused(self, exc: KafkaException, sent: Sent, on_delivery: OnDelivery) -> None:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.fatal() and err.code() not in _FENCED:
            self._broken = err.str()
            on_delivery(SendError(SendFailure.TRANSIENT, self._broken), sent)
            return
        super()._refused(exc, sent, on_delivery)

    def begin(self) -> None:
        self._offsets_sent = False
        if self._broken is not None:
            return  # the next commit says ABORT
        try:
            self._p.begin_transaction()
        except KafkaException as exc:
            self._broken = str(exc)

    def commit(self, offsets: Mapping[tuple[str, int], int], group: object,
               timeout_s: float) -> TxState:  # fmt: skip
        """Add the input offsets (once) and commit, waiting at most about ``timeout_s``."""
        if self._broken is not None:
            return TxState.ABORT
        try:
            if not self._offsets_sent and offsets:
                tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                self._p.send_offsets_to_transaction(tps, group, timeout_s)
            self._offsets_sent = True
            self._p.commit_transaction(timeout_s)
        except KafkaException as exc:
            return self._verdict(exc)
        return TxState.COMMITTED

    def abort(self, timeout_s: float) -> bool:
        """Abort the open transaction, or replace a broken producer; False when that did
        not finish within the timeout (call again)."""
        if self._broken is None:
            try:
                self._p.abort_transaction(timeout_s)
                return True
            except KafkaException as exc:
                if self._verdict(exc) is TxState.PENDING:
                    return False
                if self._broken is None:  # abort refused outright: start afresh
                    self._broken = str(exc)
        return self._renew(timeout_s)

    def _renew(self, timeout_s: float) -> bool:
        if self._spare is None:
            log.warning("transactional producer failed (%s); replacing it", self._broken)
            self._spare = Producer(self._conf)
        try:
            self._spare.init_transactions(timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and (err.retriable() or
                                                err.code() == KafkaError._TIMED_OUT):
                return False
            raise KafkaFatalError(f"kafka transactions: {exc}") from exc
        self._p, self._spare, self._broken = self._spare, None, None
        return True

    def _verdict(self, exc: KafkaException) -> TxState:
        err = exc.args[0]
        if not isinstance(err, KafkaError):
            raise KafkaFatalError(f"kafka transaction: {exc}") from exc
        if err.code() in _FENCED:
            raise KafkaFatalError(
                f"kafka transaction: fenced by another worker with the same transactional "
                f"id ({err.str()}); give every running worker its own --instance-id") from exc
        if err.txn_requires_abort():
            return TxState.ABORT
        if not err.fatal() and (err.retriable() or err.code() == KafkaError._TIMED_OUT):
            return TxState.PENDING
        self._broken = err.str()
        return TxState.ABORT
