"""Two exactly-once workers with one instance id (issue 26): the one whose static membership
was taken refuses every seek with "Local: Erroneous state" while it rewinds after an
aborted transaction, and never polls, so the fence itself is never served. The rewind
treats that refusal as the fence: a new member under the same id (which takes the
membership back), and a process fenced three times within 120 s exits 1 naming the id."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from tests.unit.stream_fakes import Journal, LogConsumer, TxSink, good, make, settings
from worker.errors import KafkaFatalError
from worker.kafka_io import clients
from worker.stream import eos


class Fenced:
    made = 0

    def __init__(self, conf: dict[str, Any]) -> None:
        Fenced.made += 1
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 5) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        raise KafkaException(KafkaError(KafkaError._STATE, "Failed to seek: Erroneous state"))

    def close(self) -> None:
        self.closed = True


def member(monkeypatch: pytest.MonkeyPatch, static: bool) -> clients.BatchConsumer:
    Fenced.made = 0
    monkeypatch.setattr(clients, "Consumer", Fenced)
    conf = {"group.id": "g", **({"group.instance.id": "same-host"} if static else {})}
    c = clients.BatchConsumer(conf, ["in"], lambda kind, n: None)
    c._owned = {("in", 0)}
    return c


def test_a_refused_seek_makes_a_new_member_instead_of_a_spin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = member(monkeypatch, static=True)
    lost: list[object] = []
    c.after_lost = lost.append
    assert c.rewind(1.0) is True  # done: the new member reads from the committed offsets
    assert Fenced.made == 2 and c._owned == set()
    assert lost == [[("in", 0)]]


def test_the_third_within_two_minutes_ends_the_process_naming_the_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = member(monkeypatch, static=True)
    with pytest.raises(KafkaFatalError) as ended:
        for _ in range(3):
            c._owned = {("in", 0)}
            c.rewind(1.0)
    assert "'same-host'" in str(ended.value)
    assert "give each running process its own --instance-id" in str(ended.value)


def test_a_dynamic_member_rejoins_too(monkeypatch: pytest.MonkeyPatch) -> None:
    c = member(monkeypatch, static=False)
    assert c.rewind(1.0) is True and Fenced.made == 2


def test_a_rewind_the_broker_refuses_waits_before_the_next_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop turns again at once after a refused rewind: each try waits a little, so a
    refusal that keeps coming costs a few calls a second, not a core."""
    journal = Journal()
    consumer = LogConsumer({0: [good(i) for i in range(3)]}, journal)
    runner = make(tmp_path, consumer, TxSink(journal),
                  settings(guarantee="exactly-once"))
    tries: list[int] = []
    consumer.rewind = lambda timeout_s: bool(tries.append(1))  # type: ignore[method-assign]
    runner.guarantee.rewind_needed = True  # type: ignore[attr-defined]
    started = time.monotonic()
    for _ in range(5):
        runner.guarantee.wait(0.0)
    assert len(tries) == 5
    assert time.monotonic() - started >= 5 * eos.REWIND_AGAIN_S * 0.9
