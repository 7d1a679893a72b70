"""The loop's ordering rules with in-memory clients: publish, flush (re-sending failures),
and only then commit. The real broker is exercised in tests/integration/test_worker.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from tests.unit.helpers import binary_bundle, event
from worker.config import Settings
from worker.core.pipeline import ScoringContext
from worker.probes import Health
from worker.stream.metrics import WorkerMetrics
from worker.stream.runner import Runner


@dataclass
class Msg:
    _value: bytes | None
    _offset: int
    _partition: int = 0
    _key: bytes | None = b"k"
    _headers: list[tuple[str, Any]] | None = None

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> list[tuple[str, Any]] | None:
        return self._headers


@dataclass
class Journal:
    """What the fake clients did, in order."""

    calls: list[tuple[str, Any]] = field(default_factory=list)


class FakeConsumer:
    def __init__(self, batches: list[list[Msg]], journal: Journal, runner_ref: list[Runner]):
        self.batches, self.journal, self.runner_ref = batches, journal, runner_ref

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Msg]:
        if not self.batches:
            self.runner_ref[0].request_stop()
            return []
        return self.batches.pop(0)

    before_revoke: Any = None

    def commit(self, offsets: dict[tuple[str, int], int]) -> str | None:
        self.journal.calls.append(("commit", dict(offsets)))
        return None

    def close(self) -> None:
        self.journal.calls.append(("close", None))


class FakeProducer:
    """Refuses the first delivery of the prediction of event e3."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.queue: list[Msg] = []
        self.refused_once: set[bytes] = set()

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: list[tuple[str, Any]] | None = None) -> None:  # fmt: skip
        self.journal.calls.append(("send", (topic, value)))
        self.queue.append(Msg(value, 0, _key=key, _headers=headers))
        self.queue[-1].topic = lambda t=topic: t  # type: ignore[method-assign]

    def flush_all(self, timeout_s: float) -> list[Msg]:
        failed = []
        for m in self.queue:
            v = m.value() or b""
            if b'"id":"e3"' in v and v not in self.refused_once:
                self.refused_once.add(v)
                failed.append(m)
        self.journal.calls.append(("flush", len(failed)))
        self.queue = []
        return failed

    def resend(self, msgs: list[Msg]) -> None:
        for m in msgs:
            self.send(m.topic(), m.value(), m.key(), m.headers())

    def poll(self) -> None:
        pass


def make_runner(tmp_path: Path, batches: list[list[Msg]],
                interval_ms: int = 0) -> tuple[Runner, Journal]:  # fmt: skip
    journal = Journal()
    ref: list[Runner] = []
    s = Settings(input_topic="in", output_topic="out", dlq_topic="dlq", worker_id="w1",
                 commit_interval_ms=interval_ms)  # fmt: skip
    ctx = ScoringContext(binary_bundle(tmp_path / "m"))
    consumer: Any = FakeConsumer(batches, journal, ref)
    producer: Any = FakeProducer(journal)
    runner = Runner(s, ctx, consumer, producer, WorkerMetrics(CollectorRegistry()),
                    Health(stall_s=5), clock_ms=lambda: 42)  # fmt: skip
    ref.append(runner)
    return runner, journal


def test_commit_only_after_every_output_of_the_batch_is_acknowledged(tmp_path: Path) -> None:
    good = [Msg(orjson.dumps(event(i)), i) for i in range(3)]
    flaky = Msg(orjson.dumps(event(3)), 3)
    bad = Msg(b"not json", 4)
    runner, journal = make_runner(tmp_path, [[*good, flaky, bad], [Msg(None, 5)]])
    totals = runner.run()
    kinds = [c[0] for c in journal.calls]
    # batch 1: five sends, a flush that refuses the flaky one, its re-send, a clean flush, commit
    assert kinds[:9] == ["send"] * 5 + ["flush", "send", "flush", "commit"]
    assert b'"id":"e3"' in journal.calls[6][1][1]
    assert journal.calls[8][1] == {("in", 0): 5}  # the next offset to read
    # batch 2: the tombstone becomes a dead letter, then flush, then commit; close at the end
    assert kinds[9:] == ["send", "flush", "commit", "close"]
    assert journal.calls[9][1] == ("dlq", None)
    assert journal.calls[11][1] == {("in", 0): 6}
    assert (totals.consumed, totals.scored, totals.dead_lettered) == (6, 4, 2)


def test_dead_letter_keeps_bytes_and_names_the_error(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, [[Msg(b"[1, 2]", 17, _partition=3)]])
    sent: list[Any] = []
    producer = runner.producer
    original = producer.send

    def spy(topic: str, value: bytes | None, key: bytes | None, headers: Any = None) -> None:
        sent.append((topic, value, key, dict(headers or [])))
        original(topic, value, key, headers)

    producer.send = spy  # type: ignore[method-assign]
    runner.run()
    [(topic, value, key, headers)] = sent
    assert (topic, value, key) == ("dlq", b"[1, 2]", b"k")
    assert headers["dlq.error.kind"] == "schema"
    assert headers["dlq.source.topic"] == "in"
    assert headers["dlq.source.partition"] == "3"
    assert headers["dlq.source.offset"] == "17"
    assert headers["dlq.model.version"] == "7"
    assert headers["dlq.worker.id"] == "w1"
    assert headers["dlq.failed_at"] == "42"


def test_commits_are_batched_by_interval_and_settled_when_quiet(tmp_path: Path) -> None:
    batches = [[Msg(orjson.dumps(event(10 + i)), i, _partition=i % 2)] for i in range(4)]
    runner, journal = make_runner(tmp_path, batches, interval_ms=60_000)
    runner.run()
    kinds = [c[0] for c in journal.calls]
    # four batches published back to back, one flush and one commit once the input is quiet
    assert kinds == ["send"] * 4 + ["flush", "commit", "close"]
    assert journal.calls[5][1] == {("in", 0): 3, ("in", 1): 4}


def test_revocation_settles_before_partitions_go(tmp_path: Path) -> None:
    runner, journal = make_runner(tmp_path, [[Msg(orjson.dumps(event(0)), 41)]], interval_ms=60_000)
    runner.consumer.before_revoke = runner.settle
    runner.turn()  # publishes, not yet due
    assert [c[0] for c in journal.calls] == ["send"]
    runner.consumer.before_revoke()  # what librdkafka's on_revoke triggers
    assert [c[0] for c in journal.calls] == ["send", "flush", "commit"]
    assert journal.calls[2][1] == {("in", 0): 42}
    assert runner.pending == {}
