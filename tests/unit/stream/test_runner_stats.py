"""Feature statistics under at-least-once: an input offset is committed only once the
counts of its events are acknowledged too, so a kill -9 can repeat counts but never lose
them (the real broker: tests/integration/test_feature_stats.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from tests.unit.helpers import event, logistic, save, training_data
from tests.unit.stream_fakes import HeldSink, Journal, LogConsumer, Msg, settings
from worker.core.feature_stats import FeatureStats
from worker.core.pipeline import ScoringContext
from worker.kafka_io import PartitionId
from worker.model.bundle import load_bundle
from worker.probes import Health
from worker.stream.ledger import Ledger
from worker.stream.metrics import WorkerMetrics
from worker.stream.runner import Runner


def test_a_barrier_takes_over_the_offsets_of_the_flights_before_it() -> None:
    ledger = Ledger(hold=True)
    a = ledger.open([Msg(b"{}", 0, 0), Msg(b"{}", 1, 0)])
    a.pending = 0
    ledger.advance()
    assert ledger.take() == {} and ledger.held == {("in", 0): 2}
    b = ledger.open([Msg(b"{}", 5, 1)])
    b.pending = 1
    barrier = ledger.open_barrier()
    assert barrier is not None and barrier.ends == {("in", 0): 2, ("in", 1): 6}
    later = ledger.open([Msg(b"{}", 2, 0)])  # opened after: keeps its own offsets
    barrier.pending = 1
    b.pending = later.pending = 0
    ledger.advance()
    assert ledger.take() == {}  # the barrier's records are not acknowledged yet
    barrier.pending = 0
    ledger.advance()
    assert ledger.take() == {("in", 0): 2, ("in", 1): 6}
    assert ledger.held == {("in", 0): 3} and ledger.open_barrier() is not None
    assert Ledger(hold=True).open_barrier() is None


def test_no_offset_is_committed_ahead_of_the_acknowledged_counts_of_its_events(
    tmp_path: Path,
) -> None:
    bundle = load_bundle(save(tmp_path / "m", logistic(), reference=training_data()[0]))
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    events = [event(i, a=float(i), b=-0.1 * i, c=i % 4) for i in range(12)]
    consumer = LogConsumer({0: [Msg(orjson.dumps(e), i, 0) for i, e in enumerate(events)]},
                           journal, batch=3)
    runner = Runner(settings(feature_stats_topic="stats"), ScoringContext(bundle), consumer,
                    sink, WorkerMetrics(CollectorRegistry()), Health(stall_s=5),
                    clock_ms=lambda: 42)
    consumer.runner = runner
    runner.run()
    counted = 0  # events whose counts the broker has acknowledged, at each commit
    commits: list[int] = []
    for kind, what in journal.calls:
        if kind == "ack" and what[0] == "stats":
            counted += FeatureStats.decode(what[1]).rows
        elif kind == "commit":
            offsets: dict[PartitionId, int] = what
            commits.append(offsets.get(("in", 0), 0))
            assert commits[-1] <= counted, journal.calls
    assert counted == 12 and commits and commits[-1] == 12
