"""The worker's producer: every output gets its own delivery report, classified as a
``SendError`` (too large, refused for good, or worth another try). The transactional
variant of exactly-once mode: worker/kafka_io/tx_producer.py.

Nothing here blocks longer than the timeout it is given: the loop stays in charge
of waiting, so its probes keep answering while outputs wait for the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from worker.delivery_terms import Headers, OnDelivery, OutRecord, Sent
from worker.errors import KafkaFatalError, SendError, SendFailure
from worker.kafka_io.clients import is_fatal
from worker.kafka_io.fencing import FENCE_WINDOW_S
from worker.kafka_io.watch import BrokerWatch

log = logging.getLogger(__name__)

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
                        KafkaError.INVALID_MSG_SIZE})
#: Refusals that the same record would get again, whenever it is sent.
_REJECTED = frozenset({KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
                       KafkaError.INVALID_TIMESTAMP, KafkaError.POLICY_VIOLATION,
                       KafkaError._INVALID_ARG})
#: Another process took over this one's transactional id.
FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


def classify(err: KafkaError) -> SendError:
    code = err.code()
    if code in _TOO_LARGE:
        return SendError(SendFailure.TOO_LARGE, err.str())
    if code in _REJECTED:
        return SendError(SendFailure.REJECTED, err.str())
    return SendError(SendFailure.TRANSIENT, err.str())


def fatal_line(err: KafkaError, conf: Mapping[str, Any], fences: int = 1) -> str:
    """The one line a producer's fatal error ends the process with; fenced by another
    process with the same transactional id, it names the id and the fix."""
    tid = conf.get("transactional.id")
    if tid and err.code() in FENCED_CODES:
        again = f", {fences} times within {FENCE_WINDOW_S:.0f}s" if fences > 1 else ""
        return (f"kafka transaction: fenced by another process with this one's transactional "
                f"id {tid!r} ({err.str()}{again}); give each running process its own "
                "--instance-id (the default is the host name)")
    return f"kafka producer: {err.str()}"


def _report(on_delivery: OnDelivery, tag: int, err: KafkaError | None, msg: Any) -> None:
    if err is None:
        on_delivery(tag, None, None)
    else:
        on_delivery(tag, classify(err), (msg.topic() or "", msg.value(), msg.key()))


#: ``produce``'s ``partition`` when librdkafka's partitioner chooses (RD_KAFKA_PARTITION_UA).
_ANY_PARTITION: Final = -1
#: ``produce``'s ``timestamp`` for "now".
_NOW: Final = 0


class BatchProducer:
    """An idempotent producer with a delivery report per output."""

    def __init__(self, conf: Mapping[str, Any], watch: BrokerWatch | None = None) -> None:
        self.fatal: KafkaError | None = None
        self._watch = watch
        self._conf = {**conf, "error_cb": self._error}
        self._p = self._new()
        # The loop passes one on_delivery for a batch's records: wrapped once, and each
        # record's callback is that wrap with its tag (partial of a partial is one flat
        # partial, so the broker's report reaches the caller through one Python frame).
        self._wrapped: tuple[OnDelivery | None, Any] = (None, None)

    def _new(self) -> Producer:
        return Producer(self._conf)

    def _error(self, err: KafkaError) -> None:
        if is_fatal(err):
            self.fatal = err
        elif self._watch is None or not self._watch.error("producer", err):
            log.warning("kafka producer: %s", err)

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None, on_delivery: OnDelivery, tag: int) -> None:
        """Queue one output; ``on_delivery`` gets the broker's verdict with ``tag`` (from
        ``poll``), or at once when the client refuses it (larger than
        ``message.max.bytes``)."""
        last, wrap = self._wrapped
        if last is not on_delivery:
            wrap = partial(_report, on_delivery)
            self._wrapped = (on_delivery, wrap)
        report = partial(wrap, tag)
        while True:
            try:
                # Positional arguments: confluent_kafka parses keyword ones by name, which
                # costs more than the rest of this call (bench/worker_bench.py's profile).
                if headers is None:
                    self._p.produce(topic, value, key, _ANY_PARTITION, report)
                else:
                    self._p.produce(topic, value, key, _ANY_PARTITION, report, None, _NOW,
                                    headers)
                return
            except BufferError:
                self._p.poll(0.05)  # the queue is sized above the in-flight bound: rare
            except KafkaException as exc:
                self._refused(exc, (topic, value, key), on_delivery, tag)
                return

    def send_all(self, records: Sequence[OutRecord], on_delivery: OnDelivery,
                 first_tag: int) -> None:
        """``send`` of each record, tagged ``first_tag``, ``first_tag + 1``, ...: one loop
        here instead of a Python call per record (a tenth of the worker's time per event
        went to that call, bench/worker_profile.py). The rare record the client does not
        take at once (a full queue, a refusal) goes through ``send``."""
        last, wrap = self._wrapped
        if last is not on_delivery:
            wrap = partial(_report, on_delivery)
            self._wrapped = (on_delivery, wrap)
        produce, tagged = self._p.produce, partial
        for tag, r in enumerate(records, first_tag):
            headers = r.headers
            try:
                if headers is None:
                    produce(r.topic, r.value, r.key, _ANY_PARTITION, tagged(wrap, tag))
                else:
                    produce(r.topic, r.value, r.key, _ANY_PARTITION, tagged(wrap, tag), None,
                            _NOW, headers)
            except (BufferError, KafkaException):
                self.send(r.topic, r.value, r.key, headers, on_delivery, tag)

    def _refused(self, exc: KafkaException, sent: Sent, on_delivery: OnDelivery,
                 tag: int) -> None:
        err = exc.args[0]
        if not isinstance(err, KafkaError):
            raise KafkaFatalError(f"kafka producer: {exc}") from exc
        if is_fatal(err):
            raise KafkaFatalError(fatal_line(err, self._conf)) from exc
        on_delivery(tag, classify(err), sent)

    def poll(self, timeout_s: float) -> None:
        """Serve delivery reports, waiting at most ``timeout_s`` for the first one."""
        self._p.poll(timeout_s)
        if self.fatal is not None:
            raise KafkaFatalError(fatal_line(self.fatal, self._conf))
