"""A consumer with no partitions that reports no broker connection for STRANDED_S while
the producer of the same worker has one is replaced under the same member id. A chaos hour
(at-least-once, after a broker pause) had a worker whose consumer reported no broker for
8 minutes and was given no partitions, while the other worker scored them all."""

from __future__ import annotations

from typing import Any

import pytest

from worker.kafka_io import clients
from worker.kafka_io.watch import BrokerWatch

UP = {"brokers": {"b1": {"nodeid": 1, "state": "UP"}}}
DOWN = {"brokers": {"b1": {"nodeid": 1, "state": "CONNECT"}}}


class Idle:
    made = 0

    def __init__(self, conf: dict[str, Any]) -> None:
        Idle.made += 1

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def consume(self, n: int, timeout: float) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def test_the_watch_tells_a_stranded_client_from_an_outage() -> None:
    now = [0.0]
    w = BrokerWatch(clock=lambda: now[0])
    w.stats("consumer", UP)
    w.stats("producer", UP)
    for _ in range(70):
        now[0] += 1.0
        w.stats("consumer", DOWN)
        w.stats("producer", DOWN)  # the broker is away: an outage, nobody is stranded
    assert not w.stranded("consumer", "producer", 60.0)
    w.stats("producer", UP)  # back for the producer; the consumer still not
    assert w.stranded("consumer", "producer", 60.0)
    w.replaced("consumer")  # a new one gets its own 60 s
    now[0] += 4.0
    w.stats("consumer", DOWN)
    w.stats("producer", UP)
    assert not w.stranded("consumer", "producer", 60.0)


def test_a_stranded_consumer_without_partitions_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Idle.made = 0
    monkeypatch.setattr(clients, "Consumer", Idle)
    now = [0.0]
    w = BrokerWatch(clock=lambda: now[0])
    c = clients.BatchConsumer({"group.id": "g", "group.instance.id": "w1"}, ["in"],
                              lambda kind, n: None, watch=w)
    w.stats("consumer", UP)
    now[0] += clients.STRANDED_S + 1
    w.stats("consumer", DOWN)
    w.stats("producer", UP)
    c._owned = {("in", 0)}
    c.poll_batch(10, 0)
    assert Idle.made == 1  # it owns partitions: a rebalance or a commit will say more
    c._owned = set()
    assert c.poll_batch(10, 0) == [] and Idle.made == 2
    c.poll_batch(10, 0)
    assert Idle.made == 2  # once; the new one has STRANDED_S of its own
