"""The worker's transactional producer after a broker restart (issue 26, the 13 s /readyz
dip): a send_offsets_to_transaction that stays pending once a broker answers again is
replaced after HUNG_AFTER_BROKER_S, not after 1.5x the transaction timeout, and the
broker's answer keeps /readyz honest while the loop waits; a broker still away gets the
old bound."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.delivery_terms import TxState
from worker.kafka_io import tx_producer as producer
from worker.kafka_io.watch import BrokerWatch


class HangingProducer:
    """send_offsets_to_transaction never returns (librdkafka#5456); list_topics answers
    once ``broker_back`` is set."""

    broker_back = threading.Event()
    release = threading.Event()
    made = 0

    all: list[HangingProducer] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        HangingProducer.made += 1
        HangingProducer.all.append(self)
        self.first = HangingProducer.made == 1
        self.calls: list[str] = []

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, *args: object) -> None:
        if self.first:
            HangingProducer.release.wait(30)
        self.calls.append("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")

    def list_topics(self, timeout: float) -> object:
        if not HangingProducer.broker_back.is_set():
            time.sleep(min(timeout, 0.02))
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return object()

    def poll(self, timeout: float) -> int:
        return 0


@pytest.fixture
def tx(monkeypatch: pytest.MonkeyPatch) -> producer.TxProducer:
    HangingProducer.made, HangingProducer.all = 0, []
    HangingProducer.broker_back.clear()
    HangingProducer.release.clear()
    monkeypatch.setattr(producer, "Producer", HangingProducer)
    monkeypatch.setattr(producer, "PROBE_AFTER_S", 0.05)
    monkeypatch.setattr(producer, "HUNG_AFTER_BROKER_S", 0.3)
    return producer.TxProducer({"transactional.id": "t", "transaction.timeout.ms": 10_000},
                               BrokerWatch(up=False))


def turns(tx: producer.TxProducer, seconds: float) -> list[TxState]:
    """The loop's commit turns for ``seconds`` (each waits at most 50 ms)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(tx.commit({("in", 0): 5}, object(), 0.05))
        if out[-1] is not TxState.PENDING:
            break
    return out


def test_a_call_pending_after_the_broker_is_back_is_replaced_within_seconds(
    tx: producer.TxProducer,
) -> None:
    tx.begin()
    assert turns(tx, 0.5)[-1] is TxState.PENDING  # broker away: wait, not give up
    HangingProducer.broker_back.set()
    started = time.monotonic()
    assert turns(tx, 5.0)[-1] is TxState.ABORT  # hung: aborted (a new producer next)
    assert time.monotonic() - started < 2.0  # not stuck_s (15 s)
    assert tx._watch is not None and tx._watch.current()  # /readyz saw the broker answer
    assert tx.abort(1.0) is True and HangingProducer.made == 2
    HangingProducer.release.set()


def test_a_broker_still_away_keeps_the_old_bound(tx: producer.TxProducer) -> None:
    tx.begin()
    assert set(turns(tx, 0.8)) == {TxState.PENDING}
    assert HangingProducer.made == 1
    HangingProducer.release.set()


def test_a_call_given_up_as_hung_never_commits_the_next_producers_transaction(
    tx: producer.TxProducer,
) -> None:
    """The hour chaos run: a hung send_offsets returned after its producer was replaced and
    committed the new producer's transaction without input offsets (836,500 duplicates)."""
    tx.begin()
    HangingProducer.broker_back.set()
    assert turns(tx, 5.0)[-1] is TxState.ABORT
    assert tx.abort(1.0) is True
    old, new = HangingProducer.all
    tx.begin()  # the next transaction, on the new producer
    HangingProducer.release.set()  # the old call returns now
    time.sleep(0.2)
    assert new.calls == []  # nothing of the old call reached the new producer
    assert old.calls[:1] == ["send_offsets"]  # it went on, on its own (fenced) producer
    assert tx.commit({("in", 0): 9}, object(), 1.0) is TxState.COMMITTED
    assert new.calls == ["send_offsets", "commit"]  # its offsets travel with its outputs


class TimingOutProducer(HangingProducer):
    """Every commit_transaction returns "timed out, retry" (after a broker pause librdkafka
    kept output partitions whose leader it had lost, and each commit timed out flushing to
    them, for minutes)."""

    def send_offsets_to_transaction(self, *args: object) -> None:
        self.calls.append("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")
        if self is HangingProducer.all[0]:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "from the test"))


def test_a_commit_that_keeps_timing_out_is_given_up_past_the_transaction_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    HangingProducer.made, HangingProducer.all = 0, []
    monkeypatch.setattr(producer, "Producer", TimingOutProducer)
    tx = producer.TxProducer({"transactional.id": "t", "transaction.timeout.ms": 200})
    tx.begin()
    started = time.monotonic()
    seen = turns(tx, 3.0)
    assert seen[0] is TxState.PENDING and seen[-1] is TxState.ABORT  # retried, then given up
    assert 0.3 <= time.monotonic() - started < 2.0  # past stuck_s (0.3 s), not for minutes
    assert HangingProducer.all[0].calls.count("commit") >= 2
    assert tx.abort(1.0) is True and HangingProducer.made == 2  # a new producer
    tx.begin()
    assert tx.commit({("in", 0): 9}, object(), 1.0) is TxState.COMMITTED


def test_a_metadata_probe_that_does_not_return_never_holds_the_loop() -> None:
    """A worker of the second chaos hour logged nothing for 7 minutes after replacing a hung
    producer, until the hung call returned: a probe on that producer may wait as long as
    the call. The probe is waited for about a second, then asked again, never sent twice."""
    release = threading.Event()
    sent: list[float] = []

    class Stuck:
        def list_topics(self, timeout: float) -> object:
            sent.append(timeout)
            release.wait(30)
            return object()

    stuck: Any = Stuck()
    started = time.monotonic()
    pending, answered = producer.probe_broker(stuck, None)
    assert not answered and pending is not None
    assert time.monotonic() - started < producer.PROBE_TIMEOUT_S + 1.0
    pending, answered = producer.probe_broker(stuck, pending)
    assert not answered and len(sent) == 1  # the same request waited for again
    release.set()
    assert producer.probe_broker(stuck, pending) == (None, True)
