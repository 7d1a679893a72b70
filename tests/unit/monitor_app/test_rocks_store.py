"""The on-disk StateStore (RocksDB): staging, commits with their changelog offset, scans,
reopening, and the same stage-one results as the in-memory store."""

from __future__ import annotations

from pathlib import Path

from tests.unit.monitor.test_bulk import CONFIG, WINDOWS, random_stream, spec_for, to_block
from worker.monitor.stages import JoinPartition
from worker.monitor.store import MemoryStore, due_key, split_due_key
from worker.monitor_app.rocks import RocksStore, shared_cache


def test_staged_writes_are_visible_at_once_and_durable_only_after_commit(tmp_path: Path) -> None:
    cache = shared_cache(8)
    store = RocksStore(tmp_path / "p0", cache)
    assert store.applied() is None
    store.stage(b"ea", b"1")
    store.stage(b"eb", b"2")
    assert store.get_many([b"ea", b"eb", b"ec"]) == [b"1", b"2", None]
    assert store.scan(b"e", b"f", 10) == []  # scans read committed state only
    store.commit(41, 1000)
    store.stage(b"ea", None)
    store.stage(b"ec", b"3")
    assert store.get_many([b"ea", b"ec"]) == [None, b"3"]
    store.rollback()  # the transaction aborted
    assert store.get_many([b"ea", b"ec"]) == [b"1", None]
    store.close()
    again = RocksStore(tmp_path / "p0", cache)
    assert again.applied() == (41, 1000)
    assert again.scan(b"e", b"f", 10) == [(b"ea", b"1"), (b"eb", b"2")]
    assert again.scan(b"e", b"f", 1) == [(b"ea", b"1")]
    assert again.disk_bytes() > 0
    again.wipe()
    assert again.applied() is None and again.get_many([b"ea"]) == [None]
    again.close()


def test_the_expiry_index_scans_in_time_order_before_1970_too(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "p1", shared_cache(8))
    times = [5_000, -7, 0, 1 << 45, -(1 << 40)]
    for t in times:
        store.stage(due_key(t, f"id{t}".encode()), b"")
    store.commit(None, 0)
    scanned = [split_due_key(k) for k, _ in store.scan(b"d", due_key(6_000, b""), 100)]
    assert scanned == [(t, f"id{t}".encode()) for t in sorted(times) if t < 6_000]
    store.close()


def test_stage_one_on_rocksdb_equals_stage_one_in_memory(tmp_path: Path) -> None:
    stream = random_stream(3, 400)
    rocks = RocksStore(tmp_path / "p2", shared_cache(8))
    memory = MemoryStore()
    results = []
    for store in (rocks, memory):
        jp = JoinPartition(0, WINDOWS, spec_for, store, CONFIG)
        records = {}
        for i in range(0, len(stream), 50):
            records.update(jp.apply(to_block(stream[i : i + 50]))[0])
            records.update(jp.flush()[0])
            if isinstance(store, RocksStore):
                store.commit(i, 0)
            else:
                store.commit()
        swept = jp.sweep(stream[-1][0] + CONFIG.horizon_ms * 10)[0]
        swept.update(jp.flush()[0])
        results.append((records, swept, jp.stats))
    assert results[0] == results[1]
    rocks.close()
