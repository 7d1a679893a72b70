"""In-memory stand-ins for the loop's clients: a partitioned input log with a consumer
over it, and sinks that acknowledge at once, on demand, or inside transactions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from tests.unit.helpers import binary_bundle, event
from worker.config import Settings
from worker.core.pipeline import ScoringContext
from worker.errors import SendError
from worker.probes import Health
from worker.stream.metrics import WorkerMetrics
from worker.stream.outputs import RecordLimit
from worker.stream.runner import Runner
from worker.stream.sinks import OnDelivery, TxState


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

    def error(self) -> None:
        return None


def good(i: int, partition: int = 0) -> Msg:
    return Msg(orjson.dumps(event(i)), i, partition)


@dataclass
class Journal:
    """What the fake clients did, in order."""

    calls: list[tuple[str, Any]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


class ListSink:
    """The four-line toy sink of worker/stream/sinks/__init__.py, as written there."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, Any]] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: Any,
             on_delivery: OnDelivery, tag: int) -> None:
        self.records.append((topic, value, key, headers))
        on_delivery(tag, None, None)

    def poll(self, timeout_s: float) -> None:
        pass


class HeldSink:
    """Keeps every verdict until the test gives it (``ack``/``refuse``), or at once when
    ``auto``; ``refuse_when`` refuses matching records (first ``times`` sends only)."""

    def __init__(self, journal: Journal, auto: bool = False) -> None:
        self.journal, self.auto = journal, auto
        self.waiting: list[tuple[tuple[str, bytes | None, bytes | None, Any], OnDelivery,
                                 int]] = []
        self.refuse_when: Callable[[str, bytes | None], SendError | None] = lambda t, v: None

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: Any,
             on_delivery: OnDelivery, tag: int) -> None:
        self.journal.calls.append(("send", (topic, value)))
        self.waiting.append(((topic, value, key, headers), on_delivery, tag))

    def poll(self, timeout_s: float) -> None:
        if self.auto:
            self.release()

    def release(self, n: int | None = None) -> None:
        """Give the verdict of the first ``n`` waiting records (all by default)."""
        n = len(self.waiting) if n is None else n
        batch, self.waiting = self.waiting[:n], self.waiting[n:]
        for (topic, value, key, _), done, tag in batch:
            verdict = self.refuse_when(topic, value)
            self.journal.calls.append(("ack" if verdict is None else "refused", (topic, value)))
            done(tag, verdict, None if verdict is None else (topic, value, key))


class BatchHeldSink(HeldSink):
    """A HeldSink that also takes a batch in one call (a BatchSink), noting each call."""

    def send_all(self, records: Any, on_delivery: OnDelivery, first_tag: int) -> None:
        self.journal.calls.append(("send_all", (first_tag, len(records))))
        for tag, r in enumerate(records, first_tag):
            self.send(r.topic, r.value, r.key, r.headers, on_delivery, tag)


class TxSink(HeldSink):
    """A transactional toy: records become ``visible`` with their offsets on commit."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal, auto=True)
        self.open: list[tuple[str, bytes | None, Any]] = []
        self.visible: list[tuple[str, bytes | None, Any]] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.failed = False
        #: The group whose committed offsets the transaction's offsets become.
        self.group: LogConsumer | None = None

    def begin(self) -> None:
        self.journal.calls.append(("begin", None))
        self.open, self.failed = [], False

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: Any,
             on_delivery: OnDelivery, tag: int) -> None:
        def done(tag: int, err: SendError | None, sent: Any) -> None:
            if err is None:
                self.open.append((topic, value, headers))
            else:
                self.failed = True
            on_delivery(tag, err, sent)

        super().send(topic, value, key, headers, done, tag)

    def commit(self, offsets: Mapping[tuple[str, int], int], group: object,
               timeout_s: float) -> TxState:
        self.release()
        if self.failed:
            return TxState.ABORT
        self.journal.calls.append(("commit", dict(offsets)))
        self.visible += self.open
        self.committed.update(offsets)
        if self.group is not None:
            self.group.committed.update(offsets)
        self.open = []
        return TxState.COMMITTED

    def abort(self, timeout_s: float) -> bool:
        self.journal.calls.append(("abort", None))
        self.waiting, self.open = [], []
        return True


class LogConsumer:
    """A consumer over fixed partition logs: hands out ``batch`` messages a poll (round
    robin over partitions), commits, rewinds to the committed offsets; asks the runner
    to stop once everything was read and the ``idle`` polls after that are done."""

    def __init__(self, logs: dict[int, list[Msg]], journal: Journal, batch: int = 3,
                 idle: int = 3) -> None:
        self.logs, self.journal, self.batch, self.idle = logs, journal, batch, idle
        self.position = {p: 0 for p in logs}
        self.committed: dict[tuple[str, int], int] = {}
        self.before_revoke: Any = None
        self.after_lost: Any = None
        self.on_commit: Any = None
        self.runner: Runner | None = None

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Msg]:
        out: list[Msg] = []
        for p, log in self.logs.items():
            take = log[self.position[p]: self.position[p] + min(self.batch, max_messages)]
            self.position[p] += len(take)
            out += take
        if not out:
            self.idle -= 1
            if self.idle <= 0 and self.runner is not None:
                self.runner.request_stop()
        self.journal.calls.append(("poll", len(out)))
        return out

    def commit(self, offsets: Mapping[tuple[str, int], int],
               asynchronous: bool = False, retry_s: float = 0.0) -> str | None:
        self.journal.calls.append(("commit", dict(offsets)))
        self.committed.update(offsets)
        if asynchronous and self.on_commit is not None:
            self.on_commit(None)
        return None

    def group_metadata(self) -> object:
        return "generation-1"

    def seek(self, positions: Mapping[tuple[str, int], int]) -> None:
        self.journal.calls.append(("seek", dict(positions)))
        for (_, p), offset in positions.items():
            self.position[p] = offset

    def rewind(self, timeout_s: float) -> bool:
        self.journal.calls.append(("rewind", None))
        for p in self.logs:
            self.position[p] = self.committed.get(("in", p), 0)
        return True

    def close(self) -> None:
        self.journal.calls.append(("close", None))


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"input_topic": "in", "output_topic": "out", "dlq_topic": "dlq",
                            "worker_id": "w1", "commit_interval_ms": 0}
    return Settings(**{**base, **overrides})


def make(tmp_path: Path, consumer: Any, sink: Any, s: Settings | None = None,
         limit: RecordLimit | None = None) -> Runner:
    ctx = ScoringContext(binary_bundle(tmp_path / "m"))
    extra = {"limit": limit} if limit is not None else {}
    runner = Runner(s or settings(), ctx, consumer, sink, WorkerMetrics(CollectorRegistry()),
                    Health(stall_s=5), clock_ms=lambda: 42, **extra)
    consumer.runner = runner
    if isinstance(sink, TxSink):
        sink.group = consumer
    return runner
