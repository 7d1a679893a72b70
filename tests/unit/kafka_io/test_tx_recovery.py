"""The monitor's transaction loop after a broker outage (issue 26, found by the chaos run):
a commit that fails and an abort the coordinator refuses (the producer fenced by the
broker's own timeout abort, or its transaction in an invalid state) replace the producer
under the same id instead of ending the process; a produce refused because the
transaction is in an error state makes the commit abort and replay; a fence that keeps
coming still ends the process with the line naming the id."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from worker.errors import KafkaFatalError
from worker.kafka_io import tx
from worker.kafka_io.config import Connection, Membership


class FakeProducer:
    made: list[FakeProducer] = []
    #: What each call raises, by name, for the next producer made (then cleared).
    plan: dict[str, KafkaError] = {}

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf, self.raises = conf, dict(FakeProducer.plan)
        FakeProducer.plan = {}
        self.calls: list[str] = []
        FakeProducer.made.append(self)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.raises:
            raise KafkaException(self.raises[name])

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(self, *args: object) -> None:
        self._call("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")

    def produce(self, topic: str, value: bytes | None, key: bytes | None,
                **extra: object) -> None:
        self._call("produce")

    def poll(self, timeout: float) -> int:
        return 0


class FakeConsumer:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.seeks: list[TopicPartition] = []
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: object) -> None:
        pass

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0)]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)

    def consumer_group_metadata(self) -> object:
        return object()

    def close(self) -> None:
        self.closed = True


class Msg:
    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 9


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> tx.TxLoop:
    FakeProducer.made, FakeProducer.plan = [], {}
    monkeypatch.setattr(tx, "Producer", FakeProducer)
    monkeypatch.setattr(tx, "Consumer", FakeConsumer)
    revoked: list[object] = []
    loop = tx.TxLoop(Connection("127.0.0.1:1", {}), Membership("g", "m0", 10.0), "tid",
                     on_assign=lambda parts: None, on_revoke=revoked.append)
    loop._offsets = {("in", 0): 10}  # one polled batch, its transaction open
    loop._open = True
    return loop


def err(code: int, fatal: bool = False, abort: bool = False) -> KafkaError:
    return KafkaError(code, "from the test", fatal=fatal, txn_requires_abort=abort)


def test_an_abort_the_coordinator_refuses_replaces_the_producer(loop: tx.TxLoop) -> None:
    first = FakeProducer.made[0]
    first.raises = {"commit": err(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, abort=True),
                    "abort": err(KafkaError.INVALID_TXN_STATE, fatal=True)}
    assert loop.commit() is False  # replayed from the committed offsets, not the end
    assert len(FakeProducer.made) == 2 and FakeProducer.made[1].calls == ["init"]
    assert loop._c.seeks[-1].offset == 7  # type: ignore[attr-defined]


def test_a_fenced_abort_is_counted_and_replaced(loop: tx.TxLoop) -> None:
    FakeProducer.made[0].raises = {"commit": err(KafkaError._TIMED_OUT),
                                   "abort": err(KafkaError._FENCED, fatal=True)}
    assert loop.commit() is False
    assert len(FakeProducer.made) == 2


def test_a_fatal_commit_error_gets_a_new_producer_not_an_exit(loop: tx.TxLoop) -> None:
    FakeProducer.made[0].raises = {"commit": err(KafkaError.INVALID_TXN_STATE, fatal=True)}
    assert loop.commit() is False
    assert len(FakeProducer.made) == 2
    assert "abort" not in FakeProducer.made[0].calls  # a fatal producer cannot abort


def test_a_fence_that_keeps_coming_ends_the_process_naming_the_id(loop: tx.TxLoop) -> None:
    fenced = err(KafkaError._FENCED, fatal=True)
    with pytest.raises(KafkaFatalError, match="give each running process its own"):
        for _ in range(3):
            FakeProducer.made[-1].raises = {"commit": fenced}
            loop._offsets, loop._open = {("in", 0): 10}, True
            loop.commit()
    assert "'tid'" in str(loop._tx_fences._describe(fenced, 3))


def test_a_lasting_cause_still_ends_the_process(loop: tx.TxLoop) -> None:
    FakeProducer.made[0].raises = {"commit": err(KafkaError.INVALID_TXN_STATE, fatal=True)}
    FakeProducer.plan = {"init": err(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                                     fatal=True)}
    with pytest.raises(KafkaFatalError, match="kafka transaction recovery"):
        loop.commit()


def test_a_produce_refused_in_an_abortable_state_makes_the_commit_replay(
    loop: tx.TxLoop,
) -> None:
    first = FakeProducer.made[0]
    first.raises = {"produce": err(KafkaError._STATE)}  # "Local: Erroneous state"
    loop.send("join", None, b"x")  # no exception: the monitor keeps turning
    loop.send("join", None, b"y")
    assert first.calls.count("produce") == 1  # nothing more into a lost transaction
    assert loop.commit() is False
    assert "abort" in first.calls and "commit" not in first.calls
    first.raises = {}
    loop.send("join", None, b"z")  # the next transaction works
    assert first.calls[-2:] == ["begin", "produce"]


def test_the_last_commit_before_a_stop_is_bounded_and_rebuilds_nothing(
    loop: tx.TxLoop,
) -> None:
    """A stop while the broker is away: the last commit's calls get what is left of its
    budget, a failure aborts without rewinding or restoring (a restart replays the
    transaction), and the producer is not replaced."""
    timeouts: list[float] = []
    producer = loop._p
    assert isinstance(producer, FakeProducer)

    def commit(timeout: float) -> None:
        timeouts.append(timeout)
        raise KafkaException(err(KafkaError._TIMED_OUT))

    producer.commit_transaction = commit  # type: ignore[method-assign]
    assert loop.commit(final_s=5.0) is False
    assert timeouts and 0 < timeouts[0] <= 5.0
    assert producer.calls[-1] == "abort" and len(FakeProducer.made) == 1
    assert loop._c.seeks == [] and not loop._open and loop._offsets == {}  # type: ignore[attr-defined]
    assert loop.commit(final_s=5.0) is True  # nothing left to commit


def test_committed_offsets_that_time_out_after_an_abort_are_asked_again(
    loop: tx.TxLoop,
) -> None:
    """The chaos runs' monitors ended on "Failed to get committed offsets: Local: Timed
    out" and on "Broker: Not coordinator" right after a broker restart; both are now asked
    again, a coordinator that never answers gets a new consumer under the same member id
    (its assignment resumes from the committed offsets), and any other error raises."""
    consumer = loop._c
    answers = [KafkaException(err(KafkaError._TIMED_OUT))]

    def committed(tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if answers:
            raise answers.pop()
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in tps]

    consumer.committed = committed  # type: ignore[method-assign]
    FakeProducer.made[-1].raises = {"commit": err(KafkaError._TIMED_OUT)}
    assert loop.commit() is False
    assert [tp.offset for tp in consumer.seeks] == [7]  # type: ignore[attr-defined]
    answers.append(KafkaException(err(KafkaError.NOT_COORDINATOR)))
    loop._offsets, loop._open = {("in", 0): 10}, True
    assert loop.commit() is False
    assert [tp.offset for tp in consumer.seeks] == [7, 7]  # type: ignore[attr-defined]
    answers.extend([KafkaException(err(KafkaError._TIMED_OUT))] * tx.COMMITTED_ATTEMPTS)
    loop._offsets, loop._open = {("in", 0): 10}, True
    assert loop.commit() is False
    assert loop._c is not consumer and consumer.closed  # type: ignore[attr-defined]
    assert len(consumer.seeks) == 2  # type: ignore[attr-defined]  # the new one resumes
    answers.append(KafkaException(err(KafkaError.GROUP_AUTHORIZATION_FAILED)))
    loop._c.committed = committed  # type: ignore[method-assign]
    loop._offsets, loop._open = {("in", 0): 10}, True
    with pytest.raises(KafkaFatalError):
        loop.commit()


def test_a_hung_send_offsets_replaces_the_producer_and_replays(
    loop: tx.TxLoop, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka#5456: send_offsets_to_transaction did not return after a broker kill -9,
    whatever its timeout, and the chaos run's monitor waited in it until its SIGTERM
    watchdog ended it (exit 1). Now the call is given up once a broker answers again and it
    is still pending: a new producer under the same id, a replay from the committed
    offsets, and the hung producer is never used again."""
    from worker.kafka_io import tx_bound, tx_producer

    monkeypatch.setattr(tx_bound, "WAIT_STEP_S", 0.02)
    monkeypatch.setattr(tx_producer, "PROBE_AFTER_S", 0.05)
    monkeypatch.setattr(tx_producer, "HUNG_AFTER_BROKER_S", 0.1)
    release = threading.Event()
    hung = FakeProducer.made[0]
    probes: list[float] = []

    def send_offsets(*args: object) -> None:
        hung.calls.append("send_offsets")
        release.wait(30)

    hung.send_offsets_to_transaction = send_offsets  # type: ignore[method-assign]
    hung.list_topics = lambda timeout: probes.append(timeout)  # type: ignore[attr-defined]
    try:
        assert loop.commit() is False
        assert probes  # it asked whether a broker answers before giving up
        assert len(FakeProducer.made) == 2 and FakeProducer.made[1].calls == ["init"]
        assert loop._c.seeks[-1].offset == 7  # type: ignore[attr-defined]
        loop._offsets, loop._open = {("in", 0): 11}, True
        assert loop.commit() is True  # the next transaction on the new producer
        assert "commit" in FakeProducer.made[1].calls and "commit" not in hung.calls
    finally:
        release.set()


def test_a_restore_that_fails_after_an_abort_takes_a_new_consumer(loop: tx.TxLoop) -> None:
    """CI's chaos test: after an abort the monitor's restore read watermarks and got
    "Local: Unknown partition", and the process ended; now a new consumer under the same
    member id restores the state at its assignment."""
    consumer = loop._c
    calls: list[object] = []

    def on_assign(parts: object) -> None:
        calls.append(parts)
        raise KafkaException(err(KafkaError._UNKNOWN_PARTITION))

    loop._on_assign = on_assign
    FakeProducer.made[-1].raises = {"commit": err(KafkaError._TIMED_OUT)}
    assert loop.commit() is False
    assert calls and loop._c is not consumer and consumer.closed  # type: ignore[attr-defined]


def test_a_stop_during_a_recovery_rebuilds_nothing_and_asks_no_more(loop: tx.TxLoop) -> None:
    """CI's chaos test: after a broker pause the monitor's abort timed out (60 s), then the
    committed offsets timed out again and again (30 s each), and its SIGTERM found it still
    asking; the stop's watchdog ended it with exit 1. Now each ask is bounded and a stop
    ends the recovery where it is: no new producer, no new consumer, no rewind (a restart
    resumes from the committed offsets)."""
    consumer = loop._c
    stop = {"requested": False}
    asks: list[float] = []

    def committed(tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        asks.append(timeout)
        stop["requested"] = True  # SIGTERM arrives during the first ask
        raise KafkaException(err(KafkaError._TIMED_OUT))

    consumer.committed = committed  # type: ignore[method-assign]
    loop._stopping = lambda: stop["requested"]
    FakeProducer.made[-1].raises = {"commit": err(KafkaError._TIMED_OUT),
                                    "abort": err(KafkaError._TIMED_OUT)}
    assert loop.commit() is False
    assert asks == [tx.COMMITTED_TIMEOUT_S]  # not asked again once stopping
    assert loop._c is consumer and consumer.seeks == []  # type: ignore[attr-defined]
    assert len(FakeProducer.made) == 2  # the abort failed before the stop: replaced
    stop["requested"] = True
    loop._offsets, loop._open = {("in", 0): 10}, True
    FakeProducer.made[-1].raises = {"commit": err(KafkaError._TIMED_OUT),
                                    "abort": err(KafkaError._TIMED_OUT)}
    assert loop.commit() is False
    assert len(FakeProducer.made) == 2 and asks == [tx.COMMITTED_TIMEOUT_S]


def test_the_monitors_clients_report_their_connection_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The monitor's readiness follows its clients' statistics like the worker's (the chaos
    runs' monitors logged librdkafka's line per reconnection attempt and stayed ready
    through a broker stop); a new producer or consumer reports to the same watch."""
    from worker.kafka_io.watch import BrokerWatch
    from worker.probes import WatchedHealth

    monkeypatch.setattr(tx, "Producer", FakeProducer)
    monkeypatch.setattr(tx, "Consumer", FakeConsumer)
    watch = BrokerWatch()
    health = WatchedHealth(stall_s=60, watch=watch, model_loaded=True, assigned=True)
    loop = tx.TxLoop(Connection("127.0.0.1:1", {}), Membership("g", "m0", 10.0), "tid",
                     on_assign=lambda parts: None, on_revoke=lambda parts: None, watch=watch)
    up = b'{"brokers": {"b1": {"nodeid": 1, "state": "UP"}}}'
    down = b'{"brokers": {"b1": {"nodeid": 1, "state": "CONNECT"}}}'
    for conf in (loop._conf, loop._tx_conf):
        assert conf["statistics.interval.ms"] == 1000
    loop._conf["stats_cb"](up)
    assert health.ready()
    loop._fresh_producer()  # a replaced producer keeps reporting
    FakeProducer.made[-1].conf["stats_cb"](down)
    loop._conf["stats_cb"](down)
    assert not health.ready() and health.not_ready() == ["broker not reachable"]
    plain = tx.TxLoop(Connection("127.0.0.1:1", {}), Membership("g", "m0", 10.0), "tid",
                      on_assign=lambda parts: None, on_revoke=lambda parts: None)
    assert "stats_cb" not in plain._conf and "stats_cb" not in plain._tx_conf
