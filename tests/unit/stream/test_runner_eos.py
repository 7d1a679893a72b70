"""Exactly-once mode with in-memory clients: outputs and offsets become visible together,
an abort rewinds to the committed offsets, and a record the broker refuses for good
cannot stall the loop (fallback dead letter, then nothing)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from tests.unit.helpers import event, logistic, save, training_data
from tests.unit.stream_fakes import Journal, LogConsumer, Msg, TxSink, good, make, settings
from worker.core.feature_counts import CountLayout
from worker.core.feature_stats import FeatureStats
from worker.core.pipeline import ScoringContext
from worker.errors import SendError, SendFailure
from worker.model.bundle import load_bundle
from worker.probes import Health
from worker.stream.metrics import WorkerMetrics
from worker.stream.runner import Runner
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


def test_feature_statistics_join_the_transaction_early_and_sum_to_its_events(
    tmp_path: Path,
) -> None:
    """The first batch's counts go out with the second batch's outputs (the statistics
    partition joins the transaction before its commit), the rest at the commit; what is
    visible adds up to the counts of exactly the events the transaction scored."""
    x = training_data()[0]
    bundle = load_bundle(save(tmp_path / "m", logistic(), reference=x))
    journal = Journal()
    sink = TxSink(journal)
    events = [event(i, a=float(i), b=-0.1 * i, c=i % 4) for i in range(9)]
    consumer = LogConsumer({0: [Msg(orjson.dumps(e), i, 0) for i, e in enumerate(events)]},
                           journal, batch=3)
    s = settings(guarantee="exactly-once", commit_interval_ms=60_000,
                 transaction_timeout_s=120, feature_stats_topic="stats")
    runner = Runner(s, ScoringContext(bundle), consumer, sink,
                    WorkerMetrics(CollectorRegistry()), Health(stall_s=5), clock_ms=lambda: 42)
    consumer.runner, sink.group = runner, consumer
    runner.run()
    sends = [c[1][0] for c in journal.calls if c[0] == "send"]
    stats = [i for i, topic in enumerate(sends) if topic == "stats"]
    assert len(stats) == 2 and stats[0] == 6  # after the second batch's three outputs
    records = [FeatureStats.decode(v) for t, v, _ in sink.visible if t == "stats"]
    assert ids(sink.visible) == Counter({f"e{i}": 1 for i in range(9)})
    assert sum(r.rows for r in records) == 9
    layout = CountLayout.of(bundle.manifest.profile)  # type: ignore[arg-type]
    expected = layout.count(np.array([[e["a"], e["b"], e["c"]] for e in events], dtype=float))
    assert [sum(c) for c in zip(*(r.counts for r in records), strict=True)] == expected.tolist()
