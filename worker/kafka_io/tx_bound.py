"""The monitor's transactional calls, bounded (``TxLoop``): each runs on a thread of its own
while the loop's thread waits a second at a time, and a call that hangs is given up on.

librdkafka's send_offsets_to_transaction does not always notice that its coordinator came
back after a broker restart (librdkafka#5456), whatever its timeout: a chaos run's monitor
waited in it from a broker kill -9 until its SIGTERM watchdog ended it, exit 1, 90 s later.
The worker's ``TxProducer`` gives such a call up by the same rules (the limits live there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import Producer

from worker.kafka_io import tx_producer as limits
from worker.kafka_io.tx_producer import BackgroundCall

#: How often the waiting thread looks at a pending call (and probes the broker).
WAIT_STEP_S: Final = 1.0


class TransactionHung(Exception):
    """A transactional call that has not returned: its producer must not be used again (a
    new one under the same id fences it, and its init aborts the transaction)."""


def run_bounded(fn: Callable[[], Any], timeout_s: float,
                broker_answers: Callable[[], bool]) -> Any:
    """``fn``'s result, or what it raised. Raises ``TransactionHung`` when it is still
    pending past 1.5x ``timeout_s`` (its own timeout, not honoured), or
    ``limits.HUNG_AFTER_BROKER_S`` after ``broker_answers`` said a broker is back (asked
    once the call has been pending ``limits.PROBE_AFTER_S``)."""
    call = BackgroundCall(fn)
    while True:
        done, result = call.result(WAIT_STEP_S)
        if done:
            return result
        now = time.monotonic()
        pending = now - call.started
        if pending > 1.5 * timeout_s:
            raise TransactionHung(f"pending {pending:.0f}s, past its {timeout_s:.0f}s timeout")
        if call.broker_seen is None and pending >= limits.PROBE_AFTER_S and broker_answers():
            call.broker_seen = now
        if call.broker_seen is not None and now - call.broker_seen >= limits.HUNG_AFTER_BROKER_S:
            raise TransactionHung(f"pending {pending:.0f}s, {now - call.broker_seen:.0f}s "
                                  "after a broker answered again")


def run_on(producer: Producer, fn: Callable[[], Any], timeout_s: float) -> Any:
    """``run_bounded`` of a call on ``producer``, probing its brokers with a bounded
    metadata request (``tx_producer.probe_broker``)."""
    out: list[BackgroundCall | None] = [None]

    def answers() -> bool:
        out[0], answered = limits.probe_broker(producer, out[0])
        return answered

    return run_bounded(fn, timeout_s, answers)
