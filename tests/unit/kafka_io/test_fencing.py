"""A fenced static member rejoins once (librdkafka fences itself after a broker outage
longer than its session), and ends the process when it keeps happening (another live
process with the same id), with the line that names the id and the fix."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from worker.errors import KafkaFatalError
from worker.kafka_io.fencing import FENCE_WINDOW_S, Fences, fatal_line, is_fenced

CONF = {"group.id": "g", "group.instance.id": "host-a"}
FENCED = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other "
                    "consumer with same group.instance.id")


def test_a_fence_is_recognised_only_for_a_static_member() -> None:
    assert is_fenced(FENCED, CONF)
    assert is_fenced(KafkaError(KafkaError.FENCED_INSTANCE_ID), CONF)
    assert not is_fenced(FENCED, {"group.id": "g"})  # a dynamic member: never
    assert not is_fenced(KafkaError(KafkaError._FATAL, "other"), CONF)


def test_one_fence_now_and_then_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    fences = Fences.of_member("kafka consumer", CONF, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(5):  # one broker outage after another, minutes apart
            fences.record(FENCED)
            now[0] += FENCE_WINDOW_S / 2 + 1
    assert len(caplog.records) == 5
    assert "'host-a'" in caplog.records[0].getMessage()


def test_fences_close_together_end_the_process_naming_the_id() -> None:
    now = [0.0]
    fences = Fences.of_member("kafka consumer", CONF, clock=lambda: now[0])
    fences.record(FENCED)
    now[0] += 3
    fences.record(FENCED)
    now[0] += 3
    with pytest.raises(KafkaFatalError) as caught:
        fences.record(FENCED)
    line = str(caught.value)
    assert line == fatal_line("kafka consumer", FENCED, CONF, 3)
    assert "'host-a'" in line and "'g'" in line and "(3 times within 120s)" in line
    assert line.endswith("give each running process its own --instance-id (the default is "
                         "the host name)")


def test_a_fenced_transactional_id_is_counted_the_same_way() -> None:
    from worker.kafka_io.producer import fatal_line as producer_line

    conf = {"transactional.id": "g-host-a"}
    err = KafkaError(KafkaError._FENCED, "This instance has been fenced by a newer instance")
    now = [0.0]
    fences = Fences("g-host-a", lambda e, n: producer_line(e, conf, n), clock=lambda: now[0])
    fences.record(err)  # the broker's abort of a timed-out transaction, say: go on
    now[0] += FENCE_WINDOW_S + 1
    fences.record(err)
    fences.record(err)
    with pytest.raises(KafkaFatalError, match=r"'g-host-a'.*3 times within 120s.*--instance-id"):
        fences.record(err)
