"""A clean rebalance in at-least-once mode repeats nothing, however loaded the machine
(issue 26: 1 -> 3 -> 1 workers gave 82 duplicates under load): an asynchronous commit
that failed (the group was rebalancing) is sent again by the settling commit before the
partitions go, and at shutdown."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tests.unit.stream_fakes import HeldSink, Journal, LogConsumer, good, make, settings


class FailingAsync(LogConsumer):
    """Asynchronous commits fail (reported through on_commit); synchronous ones succeed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.retry_s: list[float] = []

    def commit(self, offsets: Mapping[tuple[str, int], int], asynchronous: bool = False,
               retry_s: float = 0.0) -> str | None:
        if asynchronous:
            self.journal.calls.append(("commit failed", dict(offsets)))
            if self.on_commit is not None:
                self.on_commit("Broker: Group rebalance in progress")
            return None
        self.retry_s.append(retry_s)
        return super().commit(offsets, False)


def test_a_failed_asynchronous_commit_is_settled_before_partitions_go(tmp_path: Path) -> None:
    journal = Journal()
    sink = HeldSink(journal, auto=True)
    consumer = FailingAsync({0: [good(i) for i in range(6)]}, journal, batch=3)
    runner = make(tmp_path, consumer, sink, settings(commit_interval_ms=0))
    runner.turn()
    runner.turn()  # both batches acknowledged; their asynchronous commits failed
    assert consumer.committed == {}
    runner.guarantee.revoke([("in", 0)])
    assert consumer.committed == {("in", 0): 6}  # nothing for the next owner to repeat
    assert consumer.retry_s and consumer.retry_s[-1] > 0  # "rebalance in progress" retried


def test_shutdown_settles_a_failed_asynchronous_commit_too(tmp_path: Path) -> None:
    journal = Journal()
    consumer = FailingAsync({0: [good(i) for i in range(4)]}, journal, batch=4, idle=1)
    make(tmp_path, consumer, HeldSink(journal, auto=True), settings(commit_interval_ms=0)).run()
    assert consumer.committed == {("in", 0): 4}


def test_lost_partitions_are_not_committed_again(tmp_path: Path) -> None:
    journal = Journal()
    consumer = FailingAsync({0: [good(i) for i in range(3)]}, journal, batch=3)
    runner = make(tmp_path, consumer, HeldSink(journal, auto=True),
                  settings(commit_interval_ms=0))
    runner.turn()
    runner.turn()
    runner.guarantee.lost([("in", 0)])  # another member may own it already
    runner.guarantee.close(1.0)
    assert consumer.committed == {}
