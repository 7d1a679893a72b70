"""Demo traffic: transactions at a steady rate, and their true labels after a delay.

Events follow schemas/transaction.schema.json, keyed by card so that one card's
transactions stay in order on one partition. Labels (schemas/label.schema.json)
go to their own topic once ``label_delay_s`` has passed, as chargebacks would.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import orjson

from worker.clock import wall_ms
from worker.devtools.demo import make_events
from worker.errors import SendError
from worker.kafka_io import BatchProducer

TICK_S = 0.05


class _Sender:
    """Fire-and-forget sends that are retried until the broker has every one."""

    def __init__(self, conf: Mapping[str, str]) -> None:
        self._p = BatchProducer(conf)
        self._pending = 0
        self._failed: list[tuple[str, bytes | None, bytes | None]] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None) -> None:
        self._pending += 1

        def done(tag: int, err: SendError | None, sent: object) -> None:
            self._pending -= 1
            if err is not None:
                self._failed.append((topic, value, key))

        self._p.send(topic, value, key, None, done, 0)

    def poll(self) -> None:
        self._p.poll(0)

    def finish(self) -> None:
        while self._pending or self._failed:
            failed, self._failed = self._failed, []
            for item in failed:
                self.send(*item)
            self._p.poll(0.1)


@dataclass(frozen=True)
class DemoTraffic:
    """What to send; see ``scoring-worker produce-demo --help``."""

    topic: str
    count: int
    #: Events per second; 0 sends as fast as the producer takes them.
    rate: float = 1000.0
    labels_topic: str | None = None
    label_delay_s: float = 0.0
    #: Events after this many follow the drifted fraud pattern (None: never).
    drift_after: int | None = None
    seed: int = 1
    start_id: int = 0
    #: Every n-th event is malformed (0: none), to show dead letters at work.
    bad_every: int = 0


@dataclass
class DemoSummary:
    events: int = 0
    labels: int = 0
    drifted: int = 0
    malformed: int = 0
    seconds: float = 0.0
    #: Event time (epoch ms) of the first drifted event; None before the drift.
    drift_started_ms: int | None = None


def _malformed(event: dict[str, object], n: int) -> bytes | None:
    """A broken version of an event, in one of the ways real producers break them."""
    variant = n % 4
    if variant == 0:
        return orjson.dumps(event)[:-7]  # truncated JSON
    if variant == 1:
        return orjson.dumps({**event, "amount": str(event["amount"])})
    if variant == 2:
        return orjson.dumps({k: v for k, v in event.items() if k != "id"})
    return None  # a tombstone


def produce_demo(
    t: DemoTraffic,
    producer_conf: Mapping[str, str],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: Callable[[], bool] = lambda: False,
    summary: DemoSummary | None = None,
) -> DemoSummary:
    """Send ``t.count`` events paced at ``t.rate``; return when every label is sent too.

    ``stop`` ends the events early (their labels still follow); ``summary`` is updated
    as it goes, for a caller watching from another thread."""
    producer = _Sender(producer_conf)
    rng = np.random.default_rng(t.seed)
    pending: deque[tuple[float, bytes, bytes]] = deque()
    summary = summary if summary is not None else DemoSummary()
    t0 = clock()
    count = t.count
    while summary.events < count or pending:
        now = clock()
        if stop():
            count = summary.events
        # Pace by the elapsed time, not by sleeps, so slow ticks do not lower the rate.
        due = count if t.rate <= 0 else min(count, int((now - t0) * t.rate) + 1)
        n = min(due - summary.events, 10_000)
        if n > 0:
            _send_events(t, producer, rng, n, summary, pending, now)
        _send_due_labels(t, producer, pending, summary, now)
        producer.poll()
        if n <= 0:
            sleep(TICK_S)
    producer.finish()
    summary.seconds = clock() - t0
    return summary


def _send_events(
    t: DemoTraffic,
    producer: _Sender,
    rng: np.random.Generator,
    n: int,
    summary: DemoSummary,
    pending: deque[tuple[float, bytes, bytes]],
    now: float,
) -> None:
    first = t.start_id + summary.events
    split = n if t.drift_after is None else min(n, max(0, t.drift_after - summary.events))
    now_ms = wall_ms()
    for k, drifted in ((split, False), (n - split, True)):
        if k == 0:
            continue
        events, labels = make_events(rng, k, first, now_ms, drifted=drifted)
        first += k
        for event, label in zip(events, labels, strict=True):
            event["ts"] = now_ms  # live traffic: event time is now
            number = int(event["id"][3:])
            if t.bad_every and number % t.bad_every == t.bad_every - 1:
                producer.send(t.topic, _malformed(event, number), event["card_id"].encode())
                summary.malformed += 1
                continue
            producer.send(t.topic, orjson.dumps(event), event["card_id"].encode())
            if t.labels_topic:
                msg = orjson.dumps({"id": event["id"], "label": label})
                pending.append((now + t.label_delay_s, event["id"].encode(), msg))
        summary.drifted += k if drifted else 0
        if drifted and summary.drift_started_ms is None:
            summary.drift_started_ms = now_ms
    summary.events += n


def _send_due_labels(
    t: DemoTraffic,
    producer: _Sender,
    pending: deque[tuple[float, bytes, bytes]],
    summary: DemoSummary,
    now: float,
) -> None:
    if not t.labels_topic:
        return
    now_ms = wall_ms()
    while pending and pending[0][0] <= now:
        _, key, msg = pending.popleft()
        # The label's own time is when it became known, not the event's time.
        producer.send(t.labels_topic, msg[:-1] + b',"ts":' + str(now_ms).encode() + b"}", key)
        summary.labels += 1
