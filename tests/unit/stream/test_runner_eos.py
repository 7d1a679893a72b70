"""Exactly-once mode with in-memory clients: outputs and offsets become visible together,
an abort rewinds to the committed offsets, and a record the broker refuses for good
cannot stall the loop (fallback dead letter, then nothing)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from tests.unit.stream_fakes import Journal, LogConsumer, TxSink, good, make, settings
from worker.errors import SendError, SendFailure
from worker.stream.sinks import TxState

EOS = settings(guarantee="exactly-once", commit_interval_ms=60_000, transaction_timeout_s=120)


def ids(records: list[tuple[str, bytes | None, object]], topic: str = "out") -> Counter[str]:
    return Counter(orjson.loads(v or b"{}")["id"] for t, v, _ in records if t == topic)


def test_outputs_and_offsets_commit_together(tmp_path: Path) -> None:
    journal = Journal()
    sink = TxSink(journal)
    consumer = LogConsumer({0: [good(i) for i in range(6)], 1: [good(10 + i, 1) for i in
                                                               range(3)]}, journal)
    runner = make(tmp_path, consumer, sink, EOS)

    def outside(*args: object, **kwargs: object) -> None:
        raise AssertionError("offsets must go through the transaction only")

    consumer.commit = outside  # type: ignore[method-assign,assignment]
    runner.turn()
    assert sink.visible == [] and sink.committed == {}  # open transaction: nothing visible
    runner.run()
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in [*range(6), *range(10, 13)]})
    assert sink.committed == {("in", 0): 6, ("in", 1): 13}


def test_a_refused_record_aborts_then_becomes_a_dead_letter_exactly_once(
    tmp_path: Path,
) -> None:
    journal = Journal()
    sink = TxSink(journal)
    big = SendError(SendFailure.TOO_LARGE, "Broker: Message size too large")
    sink.refuse_when = lambda t, v: big if t == "out" and b'"e4"' in (v or b"") else None
    consumer = LogConsumer({0: [good(i) for i in range(9)]}, journal)
    runner = make(tmp_path, consumer, sink, settings(guarantee="exactly-once",
                                                     commit_interval_ms=0))
    runner.run()
    # refused among others (a suspect), then refused alone (to blame): two aborts
    assert journal.kinds().count("abort") == 2 and "rewind" in journal.kinds()
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in range(9) if i != 4})
    [dead] = [(t, v, h) for t, v, h in sink.visible if t == "dlq"]
    headers = dict(dead[2])  # type: ignore[call-overload]
    assert headers["dlq.error.kind"] == "too_large" and headers["dlq.source.offset"] == "4"
    assert orjson.loads(dead[1] or b"")["id"] == "e4"
    assert sink.committed == {("in", 0): 9}


def test_a_record_nothing_can_carry_is_dropped_and_the_loop_advances(tmp_path: Path) -> None:
    journal = Journal()
    sink = TxSink(journal)
    no = SendError(SendFailure.REJECTED, "Broker: Invalid record")
    sink.refuse_when = lambda t, v: no if b'"e2"' in (v or b"") or t == "dlq" else None
    consumer = LogConsumer({0: [good(i) for i in range(6)]}, journal)
    runner = make(tmp_path, consumer, sink, settings(guarantee="exactly-once",
                                                     commit_interval_ms=0))
    runner.run()
    # refused with others, refused alone, its dead letter refused alone: three aborts
    assert journal.kinds().count("abort") == 3
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in range(6) if i != 2})
    assert sink.committed == {("in", 0): 6}
    assert runner.metrics.registry.get_sample_value(
        "scoring_outputs_dropped_total", {"kind": "prediction"}) == 1


def test_a_revocation_aborts_and_rewinds(tmp_path: Path) -> None:
    journal = Journal()
    sink = TxSink(journal)
    consumer = LogConsumer({0: [good(i) for i in range(6)]}, journal)
    runner = make(tmp_path, consumer, sink, EOS)
    runner.turn()  # e0-e2 in an open transaction
    runner.guarantee.revoke([("in", 0)])
    assert journal.kinds()[-1] == "abort"
    runner.run()
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in range(6)})


def test_a_slow_commit_keeps_the_loop_turning_without_reading(tmp_path: Path) -> None:
    journal = Journal()
    sink = TxSink(journal)
    answers = [TxState.PENDING, TxState.PENDING]
    commit = sink.commit
    sink.commit = lambda o, g, t: answers.pop() if answers else commit(o, g, t)  # type: ignore[method-assign]
    consumer = LogConsumer({0: [good(i) for i in range(3)]}, journal)
    runner = make(tmp_path, consumer, sink, settings(guarantee="exactly-once",
                                                     commit_interval_ms=0))
    runner.turn()  # reads e0-e2; the commit does not finish in time
    polls = journal.kinds().count("poll")
    runner.health.last_turn = 0.0
    runner.turn()  # commits again instead of reading
    assert journal.kinds().count("poll") == polls and runner.health.last_turn > 0
    runner.run()
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in range(3)})


class BatchRefusingTxSink(TxSink):
    """Like the broker: one bad record fails every record produced with it."""

    def release(self, n: int | None = None) -> None:
        bad = any(b'"e3"' in (v or b"") and t == "out" for (t, v, _, _), _, _ in self.waiting)
        if bad:
            self.refuse_when = lambda t, v: SendError(SendFailure.REJECTED, "invalid record")
        super().release(n)
        self.refuse_when = lambda t, v: None


def test_batch_mates_of_a_refused_record_keep_their_outputs(tmp_path: Path) -> None:
    journal = Journal()
    sink = BatchRefusingTxSink(journal)
    consumer = LogConsumer({0: [good(i) for i in range(8)]}, journal, batch=8)
    runner = make(tmp_path, consumer, sink, settings(guarantee="exactly-once",
                                                     commit_interval_ms=0))
    runner.run()
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in range(8) if i != 3})
    assert ids(sink.visible, "dlq") == Counter({"e3": 1})
    assert sink.committed == {("in", 0): 8}
