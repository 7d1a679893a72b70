"""The monitor's transactional calls, bounded (``TxLoop``): each runs on a thread of its own
while the loop's thread waits a second at a time, and a call that hangs is given up on.

librdkafka's send_offsets_to_transaction does not always notice that its coordinator came
back after a broker restart (librdkafka#5456), whatever its timeout: a chaos run's monitor
waited in it from a broker kill -9 until its SIGTERM watchdog ended it, exit 1, 90 s later.
The worker's ``TxProducer`` gives such a call up by the same rules (the limits live there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import Producer

from worker.kafka_io.tx_producer import BackgroundCall, hang_reason, probe_broker

#: How often the waiting thread looks at a pending call (and probes the broker).
WAIT_STEP_S: Final = 1.0


class TransactionHung(Exception):
    """A transactional call that has not returned: its producer must not be used again (a
    new one under the same id fences it, and its init aborts the transaction)."""


def run_bounded(fn: Callable[[], Any], timeout_s: float,
                broker_answers: Callable[[], bool]) -> Any:
    """``fn``'s result, or what it raised. Raises ``TransactionHung`` once it counts as
    hung by the worker's rules (``tx_producer.hang_reason``), past 1.5x ``timeout_s`` (its
    own timeout, not honoured) at the latest."""
    call = BackgroundCall(fn)
    while True:
        done, result = call.result(WAIT_STEP_S)
        if done:
            return result
        reason = hang_reason(call, 1.5 * timeout_s, broker_answers)
        if reason is not None:
            raise TransactionHung(reason)


def run_on(producer: Producer, fn: Callable[[], Any], timeout_s: float) -> Any:
    """``run_bounded`` of a call on ``producer``, probing its brokers with a bounded
    metadata request (``tx_producer.probe_broker``)."""
    out: list[BackgroundCall | None] = [None]

    def answers() -> bool:
        out[0], answered = probe_broker(producer, out[0])
        return answered

    return run_bounded(fn, timeout_s, answers)
