"""The local broker is a real Kafka: produce and consume through a consumer group."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer

N = 10_000


def test_10k_messages_roundtrip_through_consumer_group(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str]
) -> None:
    topic = topic_factory("roundtrip", partitions=4)
    sent = {f"k{i}".encode(): f"value-{i}-{'x' * (i % 50)}".encode() for i in range(N)}
    errors: list[str] = []
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for k, v in sent.items():
        p.produce(topic, v, k, on_delivery=lambda e, m: errors.append(str(e)) if e else None)
        p.poll(0)
    assert p.flush(30) == 0
    assert errors == []

    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_factory(),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got: dict[bytes, bytes] = {}
    partitions: set[int] = set()
    dupes = 0
    deadline = time.monotonic() + 60
    while len(got) < N and time.monotonic() < deadline:
        for m in c.consume(1000, timeout=1.0):
            assert m.error() is None, m.error()
            key, value = m.key(), m.value()
            assert key is not None and value is not None
            dupes += key in got
            got[key] = value
            partitions.add(m.partition())
    c.commit(asynchronous=False)
    c.close()
    assert dupes == 0
    assert got == sent
    assert partitions == {0, 1, 2, 3}
