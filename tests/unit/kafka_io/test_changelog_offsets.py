"""A restore asks again for offsets the broker cannot give for a moment (a chaos hour's
broker stop ended the monitor with "Failed to get watermark offsets: Broker: Not leader
for partition" raised inside its assignment)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.errors import KafkaFatalError
from worker.kafka_io.changelog import offsets_of


class Flaky:
    """get_watermark_offsets raising ``errors`` in turn, then answering."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 40


def test_a_partition_without_a_leader_for_a_moment_is_asked_again() -> None:
    now = [0.0]
    c = Flaky(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._TIMED_OUT)
    got = offsets_of(c, TopicPartition("t", 1), budget_s=60,  # type: ignore[arg-type]
                     sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert got == (3, 40) and c.calls == 3


def test_it_gives_up_after_its_budget_and_at_once_on_other_errors() -> None:
    now = [0.0]
    c = Flaky(*[KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    with pytest.raises(KafkaFatalError, match=r"restoring t\[1\]: the broker gives no offsets"):
        offsets_of(c, TopicPartition("t", 1), budget_s=5,  # type: ignore[arg-type]
                   sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert c.calls == 6
    denied = Flaky(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaFatalError):
        offsets_of(denied, TopicPartition("t", 1), sleep=lambda s: None)  # type: ignore[arg-type]
    assert denied.calls == 1
