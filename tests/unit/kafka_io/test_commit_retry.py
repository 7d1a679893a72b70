"""A synchronous offset commit that the group refuses for now (a rebalance in progress, the
coordinator loading) is tried again within its budget; other refusals are not."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.kafka_io import clients


class RefusingConsumer:
    refusals: list[KafkaError] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.commits = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        self.commits += 1
        if RefusingConsumer.refusals:
            raise KafkaException(RefusingConsumer.refusals.pop(0))
        return offsets


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> clients.BatchConsumer:
    monkeypatch.setattr(clients, "Consumer", RefusingConsumer)
    monkeypatch.setattr(clients, "COMMIT_RETRY_S", 0.01)
    c = clients.BatchConsumer({"group.id": "g"}, ["in"], lambda kind, n: None)
    c._owned = {("in", 0)}
    return c


def test_a_rebalance_in_progress_is_waited_out(consumer: clients.BatchConsumer) -> None:
    RefusingConsumer.refusals = [KafkaError(KafkaError.REBALANCE_IN_PROGRESS)] * 3
    assert consumer.commit({("in", 0): 5}, False, retry_s=5.0) is None
    assert consumer._c.commits == 4


def test_without_a_budget_the_refusal_is_returned(consumer: clients.BatchConsumer) -> None:
    RefusingConsumer.refusals = [KafkaError(KafkaError.REBALANCE_IN_PROGRESS)]
    assert consumer.commit({("in", 0): 5}) is not None


def test_a_new_generation_is_not_retried(consumer: clients.BatchConsumer) -> None:
    RefusingConsumer.refusals = [KafkaError(KafkaError.ILLEGAL_GENERATION)] * 2
    assert consumer.commit({("in", 0): 5}, False, retry_s=5.0) is not None
    assert consumer._c.commits == 1
