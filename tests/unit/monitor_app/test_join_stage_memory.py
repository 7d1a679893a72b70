"""Stage one's poll handling holds a bounded number of decoded rows, however much a poll of
a backlog brings, and joins the same groups of blocks as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.monitor.gen import T0, prediction
from tests.unit.monitor.test_bulk import (
    CONFIG,
    WINDOWS,
    H,
    random_stream,
    spec_for,
    to_block,
)
from worker.kafka_io.config import Connection
from worker.monitor.codec import Block
from worker.monitor.stages import JoinPartition
from worker.monitor.store import MemoryStore
from worker.monitor_app import join_stage
from worker.monitor_app.join_stage import JoinStage


class FakeMessage:
    def __init__(self, partition: int, value: bytes) -> None:
        self._p, self._v = partition, value

    def partition(self) -> int:
        return self._p

    def value(self) -> bytes:
        return self._v


def stage(partitions: int) -> JoinStage:
    s = JoinStage(conf=Connection("127.0.0.1:1"), changelog="c", partials_topic="p",
                  state_dir=Path("/nonexistent"), windows=WINDOWS, spec_for=spec_for,
                  config=CONFIG, retain_ms=0, cache_mib=16, wall_ms=lambda: 0)
    for p in range(partitions):
        s.joins[p] = JoinPartition(p, WINDOWS, spec_for, MemoryStore(), CONFIG)
    return s


def test_a_backlog_poll_is_never_decoded_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    merged = 1_000  # MERGED_ROWS (20,000) scaled down, so the test is quick
    monkeypatch.setattr(join_stage, "MERGED_ROWS", merged)
    rows = random_stream(3, n=200)
    block = to_block(rows).encode()
    per_block = len(rows)
    polled = 12 * merged // per_block  # a backlog: 12 groups' worth in one poll
    msgs: list[Any] = [FakeMessage(i % 2, block) for i in range(polled)]
    s = stage(2)
    live = {"rows": 0, "peak": 0}
    decode = join_stage.decode_block

    def counting_decode(raw: bytes) -> Block:
        out = decode(raw)
        live["rows"] += len(out)
        live["peak"] = max(live["peak"], live["rows"])
        return out

    joined: list[int] = []

    def counting_apply(self: JoinPartition, block: Block) -> Any:
        joined.append(len(block))
        live["rows"] -= len(block)
        return real_apply(self, block)

    real_apply = JoinPartition.apply
    monkeypatch.setattr(join_stage, "decode_block", counting_decode)
    monkeypatch.setattr(JoinPartition, "apply", counting_apply)
    s.apply(msgs)
    full = -(-merged // per_block) * per_block
    # At most one group per partition decoded and not yet joined (not the whole poll).
    assert live["peak"] <= 2 * full < polled * per_block
    assert sum(joined) == polled * per_block  # every row joined once
    # Groups as before: each closes at the first block that takes it to MERGED_ROWS; the
    # two smallest are the partitions' last groups.
    assert all(n == full for n in sorted(joined)[2:])
    assert set(s.last_block) == {0, 1}


def test_the_bounded_poll_gives_the_same_state_as_one_block_at_a_time() -> None:
    stream = random_stream(5, n=1_500)
    blocks = [to_block(stream[i:i + 250]) for i in range(0, len(stream), 250)]
    batched = stage(1)
    batched.apply([FakeMessage(0, b.encode()) for b in blocks])
    serial = JoinPartition(0, WINDOWS, spec_for, MemoryStore(), CONFIG)
    expected: dict[bytes, bytes | None] = {}
    for b in blocks:
        records, _ = serial.apply(b)
        expected.update(records)
    assert batched.records[0] == expected
    assert batched.joins[0].stats == serial.stats
    assert batched.joins[0].flush()[0] == serial.flush()[0]


def test_a_partition_restored_after_a_pause_keeps_stream_time_until_it_is_idle() -> None:
    """After a restart, a restored partition's pending predictions are older than the
    horizon by the wall clock while their labels still wait in its backlog: its first
    sweeps, before it has polled a block, run on stream time; only idle_s without a block
    while its instance is caught up on its inputs hands it to the wall clock (which
    expires them)."""
    pred = prediction(1, 0.9, 1, t=T0)
    store = MemoryStore()
    restored = JoinPartition(0, WINDOWS, spec_for, store, CONFIG)
    restored.apply(to_block([(T0, pred)]))
    store.commit()
    clock = [100.0]
    s = stage(0)
    s.monotonic = lambda: clock[0]
    s.joins[0] = restored  # as assign() leaves it: restored, never polled
    wall = T0 + 10 * H  # the restart came long after the prediction
    s.sweep(wall, idle_s=5.0)
    clock[0] += 4.9
    s.sweep(wall, idle_s=5.0)
    assert restored.stats.counts.get("expired_predictions", 0) == 0
    clock[0] += 0.2  # idle for 5.1 s since its first sweep, but the inputs have a backlog
    s.sweep(wall, idle_s=5.0, behind=True)
    assert restored.stats.counts.get("expired_predictions", 0) == 0
    s.sweep(wall, idle_s=5.0)  # caught up: the wall clock takes over
    assert restored.stats.counts.get("expired_predictions", 0) == 1
