"""Stage one's state on disk: ``StateStore`` on RocksDB (rocksdict), one DB per partition.

The compacted changelog topic stays the source of truth; the DB is a local copy
that saves reading the whole changelog on every assignment. Writes are staged in
memory during a Kafka transaction and written to the DB in one atomic batch only
after the transaction committed, together with ``applied``: the changelog offset
the DB now reflects. So the DB is never ahead of the changelog. On assignment the
caller replays the changelog from ``applied`` on (records are whole values, so a
replay is exact), or from the start when the DB is new, lost, or older than the
topic's tombstone retention (a deleted key could otherwise come back).

Memory is bounded by one budget shared by every partition's DB (``Memory``): the
block cache holds data, index and filter blocks, and the memtables are charged to it
through a write buffer manager, so RocksDB's memory does not grow with the number of
entries, partitions or the hours of a horizon.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson
from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
)

log = logging.getLogger(__name__)
META: Final = b"m"  # {"applied": next changelog offset, "at": wall ms}
WRITE_BUFFER: Final = 8 << 20


class Memory:
    """RocksDB's memory budget for every partition of the process: one block cache, with
    the memtables (half the budget at most) charged to it."""

    def __init__(self, mib: int) -> None:
        self.cache = Cache(mib << 20)
        self.buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            (mib << 20) // 2, False, self.cache)


class RocksStore:
    """``worker.monitor.store.StateStore`` on a RocksDB directory."""

    def __init__(self, path: Path, memory: Memory) -> None:
        self.path = path
        self._memory = memory
        self.staged: dict[bytes, bytes | None] = {}
        self._db = self._open()

    def _open(self) -> Rdict:
        self.path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_compression_type(DBCompressionType.lz4())
        opts.set_bottommost_compression_type(DBCompressionType.zstd())
        opts.set_write_buffer_size(WRITE_BUFFER)
        opts.set_max_write_buffer_number(2)
        opts.set_write_buffer_manager(self._memory.buffers)
        opts.set_max_background_jobs(1)
        opts.set_max_open_files(256)
        opts.set_keep_log_file_num(2)
        table = BlockBasedOptions()
        table.set_block_cache(self._memory.cache)
        table.set_bloom_filter(10, False)  # most lookups of a new prediction miss
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        return Rdict(str(self.path), opts)

    # -- StateStore ---------------------------------------------------------------------
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        staged = self.staged
        db: Any = self._db  # rocksdict's stubs do not know multi-get of bytes keys
        if not staged:
            return list(db.get(list(keys)))
        missing = [k for k in keys if k not in staged]
        found = dict(zip(missing, db.get(missing), strict=True)) if missing else {}
        return [staged[k] if k in staged else found[k] for k in keys]

    def stage(self, key: bytes, value: bytes | None) -> None:
        self.staged[key] = value

    def scan(self, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        opts = ReadOptions()
        opts.set_iterate_upper_bound(stop)
        opts.fill_cache(False)  # type: ignore[call-arg]
        it = self._db.iter(opts)
        it.seek(start)
        out: list[tuple[bytes, bytes]] = []
        while it.valid() and len(out) < limit:
            out.append((it.key(), it.value()))
            it.next()
        del it
        return out

    # -- transactions -------------------------------------------------------------------
    def commit(self, applied: int | None, at_ms: int) -> None:
        """Write the staged changes and the changelog position they bring the DB to."""
        batch = WriteBatch(raw_mode=True)
        for k, v in self.staged.items():
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        if applied is not None:
            batch.put(META, orjson.dumps({"applied": applied, "at": at_ms}))
        if not batch.is_empty():
            self._db.write(batch)
        self.staged.clear()

    def rollback(self) -> None:
        self.staged.clear()

    def applied(self) -> tuple[int, int] | None:
        """(next changelog offset, wall ms) the DB reflects; None: nothing committed."""
        raw = self._db.get(META)
        if raw is None:
            return None
        meta = orjson.loads(raw)
        return int(meta["applied"]), int(meta["at"])

    def wipe(self) -> None:
        """Empty the DB (before a restore from the changelog's start)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.staged.clear()
        self._db = self._open()

    def close(self) -> None:
        self.staged.clear()
        self._db.close()

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def shared_cache(mib: int) -> Memory:
    return Memory(mib)
