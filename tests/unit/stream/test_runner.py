"""The loop's at-least-once contract with in-memory clients: outputs are queued without
waiting, and an offset is committed only once every output of every event before it
(in its partition) was acknowledged. The real broker: tests/integration/test_worker.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.unit.helpers import event
from tests.unit.stream_fakes import (
    HeldSink,
    Journal,
    ListSink,
    LogConsumer,
    Msg,
    good,
    make,
    settings,
)
from worker.errors import SendError, SendFailure
from worker.stream.outputs import RecordLimit
from worker.stream.runner import Runner

__all__ = ["Msg", "make_runner"]


class BatchConsumer:
    """Hands out the given batches one per poll, then asks the runner to stop."""

    def __init__(self, batches: list[list[Msg]], journal: Journal) -> None:
        self.batches, self.journal = batches, journal
        self.runner: Runner | None = None
        self.before_revoke: Any = None
        self.after_lost: Any = None
        self.on_commit: Any = None

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Msg]:
        if not self.batches:
            assert self.runner is not None
            self.runner.request_stop()
            return []
        return self.batches.pop(0)

    def commit(self, offsets: dict[tuple[str, int], int], asynchronous: bool = False,
               retry_s: float = 0.0) -> None:
        self.journal.calls.append(("commit", dict(offsets)))
        if asynchronous and self.on_commit is not None:  # its outcome, as a poll serves it
            self.on_commit(None)

    def close(self) -> None:
        self.journal.calls.append(("close", None))


def make_runner(tmp_path: Path, batches: list[list[Msg]],
                interval_ms: int = 0) -> tuple[Runner, Journal]:
    """A runner over ``batches`` whose sink acknowledges each record when polled."""
    journal = Journal()
    runner = make(tmp_path, BatchConsumer(batches, journal), HeldSink(journal, auto=True),
                  settings(commit_interval_ms=interval_ms))
    return runner, journal


def test_a_four_line_toy_sink_drives_the_loop(tmp_path: Path) -> None:
    journal = Journal()
    sink = ListSink()
    runner = make(tmp_path, LogConsumer({0: [good(i) for i in range(5)]}, journal), sink)
    totals = runner.run()
    assert [r[0] for r in sink.records] == ["out"] * 5
    assert ("commit", {("in", 0): 5}) in journal.calls
    assert (totals.consumed, totals.scored) == (5, 5)


def test_nothing_is_committed_ahead_of_an_unacknowledged_output(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal)
    logs = {0: [good(i) for i in range(6)], 1: [good(10 + i, 1) for i in range(6)]}
    consumer = LogConsumer(logs, journal, batch=3)
    runner = make(tmp_path, consumer, sink)
    runner.turn()  # batch A: offsets 0-2 of both partitions
    runner.turn()  # batch B: offsets 3-5
    assert consumer.committed == {} and len(sink.waiting) == 12  # produced, nothing acked
    a, b = sink.waiting[:6], sink.waiting[6:]
    for _, done, tag in b + a[:5]:  # all of B, and all of A but one output of partition 1
        done(tag, None, None)
    sink.waiting = a[5:]
    runner.turn()
    assert consumer.committed == {}
    sink.release()
    runner.turn()
    assert consumer.committed == {("in", 0): 6, ("in", 1): 16}


def test_offsets_follow_acknowledgements_in_order(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal)
    consumer = LogConsumer({0: [good(i) for i in range(6)]}, journal, batch=3)
    runner = make(tmp_path, consumer, sink)
    runner.turn()
    runner.turn()
    first, second = sink.waiting[:3], sink.waiting[3:]
    for _, done, tag in second:  # the later batch is acknowledged first
        done(tag, None, None)
    sink.waiting = first
    runner.turn()
    assert consumer.committed == {}  # batch 1 still waits: batch 2 must not be committed
    sink.release(2)
    runner.turn()
    assert consumer.committed == {}
    sink.release()
    runner.turn()
    assert consumer.committed == {("in", 0): 6}


def test_a_transient_refusal_is_sent_again_and_committed_after(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr("worker.stream.delivery.RETRY_DELAY_S", 0.0)
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    refusals = [SendError(SendFailure.TRANSIENT, "timed out")]
    sink.refuse_when = lambda t, v: refusals.pop() if refusals and b'"e1"' in (v or b"") \
        else None
    consumer = LogConsumer({0: [good(i) for i in range(3)]}, journal)
    make(tmp_path, consumer, sink).run()
    e1 = [c for c in journal.calls if c[0] in ("send", "refused", "ack")
          and b'"e1"' in (c[1][1] or b"")]
    assert [c[0] for c in e1] == ["send", "refused", "send", "ack"]
    assert consumer.committed == {("in", 0): 3}


def test_an_output_refused_for_good_becomes_a_fitted_dead_letter(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    big = SendError(SendFailure.TOO_LARGE, "Broker: Message size too large")
    sink.refuse_when = lambda t, v: big if t == "out" and b'"e1"' in (v or b"") else None
    consumer = LogConsumer({0: [good(i) for i in range(3)]}, journal)
    runner = make(tmp_path, consumer, sink)
    runner.run()
    [dead] = [c for c in journal.calls if c[0] == "send" and c[1][0] == "dlq"]
    assert dead[1][1] == orjson.dumps(event(1))  # the original event, whole
    assert consumer.committed == {("in", 0): 3}
    assert runner.metrics.registry.get_sample_value(
        "scoring_dead_letters_total", {"reason": "too_large"}) == 1


def test_a_dead_letter_that_cannot_be_produced_is_dropped_and_committed(
    tmp_path: Path,
) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    no = SendError(SendFailure.REJECTED, "Broker: Invalid record")
    sink.refuse_when = lambda t, v: no if b"not json" in (v or b"") or t == "dlq" else None
    consumer = LogConsumer({0: [good(0), Msg(b"not json", 1), good(2)]}, journal)
    runner = make(tmp_path, consumer, sink)
    runner.run()  # decode dead letter refused -> undeliverable fallback refused -> dropped
    assert consumer.committed == {("in", 0): 3}
    reg = runner.metrics.registry
    assert reg.get_sample_value("scoring_outputs_dropped_total",
                                {"kind": "fallback dead letter"}) == 1


def test_a_prediction_larger_than_the_limit_is_dead_lettered_at_once(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    long_id = {**event(0), "id": "x" * 5000}
    consumer = LogConsumer({0: [Msg(orjson.dumps(long_id), 0), good(1)]}, journal)
    make(tmp_path, consumer, sink, limit=RecordLimit(4000, "test limit")).run()
    sent = [c[1] for c in journal.calls if c[0] == "send"]
    assert [t for t, _ in sent] == ["dlq", "out"]
    assert len(sent[0][1] or b"") < 4000  # a prefix of the event
    assert consumer.committed == {("in", 0): 2}


def test_dead_letter_keeps_bytes_and_names_the_error(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    seen: list[Any] = []
    original = sink.send

    def spy(topic: str, value: bytes | None, key: bytes | None, headers: Any,
            on_delivery: Any, tag: int) -> None:
        seen.append((topic, value, key, dict(headers or [])))
        original(topic, value, key, headers, on_delivery, tag)

    sink.send = spy  # type: ignore[method-assign]
    make(tmp_path, LogConsumer({3: [Msg(b"[1, 2]", 17, _partition=3)]}, journal), sink).run()
    [(topic, value, key, headers)] = seen
    assert (topic, value, key) == ("dlq", b"[1, 2]", b"k")
    assert headers["dlq.error.kind"] == "schema"
    assert headers["dlq.source.topic"] == "in"
    assert headers["dlq.source.partition"] == "3"
    assert headers["dlq.source.offset"] == "17"
    assert headers["dlq.model.version"] == "7"
    assert headers["dlq.worker.id"] == "w1"
    assert headers["dlq.failed_at"] == "42"


def test_commits_wait_for_the_interval_and_happen_when_quiet(tmp_path: Path) -> None:
    runner, journal = make_runner(tmp_path, [[good(i, i % 2)] for i in range(4)], 60_000)
    runner.run()
    commits = [c for c in journal.calls if c[0] == "commit"]
    # four batches, no commit while busy; one when the input went quiet
    assert commits == [("commit", {("in", 0): 3, ("in", 1): 4})]
    assert journal.kinds()[-1] == "close"


def test_revocation_waits_for_outputs_and_commits_before_partitions_go(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal)
    consumer = LogConsumer({0: [good(41)]}, journal)
    runner = make(tmp_path, consumer, sink, settings(commit_interval_ms=60_000))
    runner.turn()  # published, not acknowledged
    sink.auto = True  # the broker answers while the revocation waits
    runner.guarantee.revoke([("in", 0)])  # what librdkafka's on_revoke triggers
    assert consumer.committed == {("in", 0): 42}


def test_the_in_flight_bound_pauses_reading_but_not_the_loop(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal)  # the broker is away: nothing is acknowledged
    consumer = LogConsumer({0: [good(i) for i in range(30)]}, journal, batch=4)
    runner = make(tmp_path, consumer, sink, settings(max_in_flight=10))
    turned = []
    for _ in range(10):
        runner.health.last_turn = 0.0
        runner.turn()
        turned.append(runner.health.last_turn > 0.0)
    polls = [c for c in journal.calls if c[0] == "poll"]
    assert len(polls) == 3 and consumer.position[0] == 12  # stopped at the bound
    assert all(turned)  # every turn reports to /healthz while waiting
    sink.release()
    runner.turn()
    assert consumer.committed == {("in", 0): 12}


def test_shutdown_waits_for_outputs_then_commits_and_closes(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    consumer = LogConsumer({0: [good(i) for i in range(5)]}, journal, batch=5, idle=1)
    make(tmp_path, consumer, sink, settings(commit_interval_ms=60_000)).run()
    assert journal.kinds()[-2:] == ["commit", "close"]
    assert consumer.committed == {("in", 0): 5}


def test_batch_mates_of_a_refused_record_are_sent_again_alone(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    no = SendError(SendFailure.REJECTED, "Broker: Broker failed to validate record")
    real_release = sink.release

    def release(n: int | None = None) -> None:  # one bad record fails the whole batch
        bad = any(b'"e2"' in (v or b"") and t == "out" for (t, v, _, _), _, _ in sink.waiting)
        sink.refuse_when = (lambda t, v: no) if bad else (lambda t, v: None)
        real_release(n)

    sink.release = release  # type: ignore[method-assign]
    consumer = LogConsumer({0: [good(i) for i in range(5)]}, journal, batch=5)
    make(tmp_path, consumer, sink).run()
    acked = [c[1] for c in journal.calls if c[0] == "ack"]
    predicted = {orjson.loads(v or b"")["id"] for t, v in acked if t == "out"}
    assert predicted == {"e0", "e1", "e3", "e4"}  # the innocent ones, sent again alone
    assert [orjson.loads(v or b"")["id"] for t, v in acked if t == "dlq"] == ["e2"]
    assert consumer.committed == {("in", 0): 5}
