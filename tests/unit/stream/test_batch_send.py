"""A sink with ``send_all`` (worker/stream/sinks: BatchSink) gets each batch in one call,
tagged by position, and the loop's contract holds as with ``send``: refusals are found by
their tag, and a batch with an output nobody can carry goes record by record."""

from __future__ import annotations

from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from tests.unit.helpers import binary_bundle, event
from tests.unit.stream_fakes import BatchHeldSink, Journal, LogConsumer, Msg, good, make, settings
from worker.core.pipeline import ScoringContext
from worker.errors import SendError, SendFailure
from worker.probes import Health
from worker.stream.metrics import WorkerMetrics
from worker.stream.runner import Runner


def test_a_batch_goes_out_in_one_call_tagged_by_position(tmp_path: Path) -> None:
    journal = Journal()
    sink = BatchHeldSink(journal, auto=True)
    consumer = LogConsumer({0: [good(i) for i in range(4)]}, journal, batch=4)
    totals = make(tmp_path, consumer, sink).run()
    assert ("send_all", (0, 4)) in journal.calls
    sends = [c[1] for c in journal.calls if c[0] == "send"]
    assert [t for t, _ in sends] == ["out"] * 4
    assert [orjson.loads(v or b"")["id"] for _, v in sends] == ["e0", "e1", "e2", "e3"]
    assert consumer.committed == {("in", 0): 4}
    assert (totals.consumed, totals.scored) == (4, 4)


def test_a_refusal_in_a_batch_send_names_its_record(tmp_path: Path) -> None:
    journal = Journal()
    sink = BatchHeldSink(journal, auto=True)
    big = SendError(SendFailure.TOO_LARGE, "Broker: Message size too large")
    sink.refuse_when = lambda t, v: big if t == "out" and b'"e2"' in (v or b"") else None
    consumer = LogConsumer({0: [good(i) for i in range(4)]}, journal, batch=4)
    runner = make(tmp_path, consumer, sink)
    runner.run()
    [dead] = [c for c in journal.calls if c[0] == "send" and c[1][0] == "dlq"]
    assert dead[1][1] == orjson.dumps(event(2))  # the refused record's own event
    assert consumer.committed == {("in", 0): 4}
    assert runner.metrics.registry.get_sample_value(
        "scoring_dead_letters_total", {"reason": "too_large"}) == 1


def test_a_batch_with_a_dropped_dead_letter_goes_record_by_record(tmp_path: Path) -> None:
    journal = Journal()
    sink = BatchHeldSink(journal, auto=True)
    msgs = [good(0), Msg(b"not json", 1, _key=None), good(2)]
    consumer = LogConsumer({0: msgs}, journal, batch=3)
    runner = Runner(settings(), ScoringContext(binary_bundle(tmp_path / "m")), consumer, sink,
                    WorkerMetrics(CollectorRegistry()), Health(stall_s=5), clock_ms=lambda: 42,
                    compacted=frozenset({"dlq"}))
    consumer.runner = runner
    runner.run()
    assert "send_all" not in journal.kinds()
    assert [c[1][0] for c in journal.calls if c[0] == "send"] == ["out", "out"]
    assert consumer.committed == {("in", 0): 3}
    assert runner.metrics.registry.get_sample_value("scoring_outputs_dropped_total",
                                                    {"kind": "dead letter"}) == 1
