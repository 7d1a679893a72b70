"""Stage one in the app: the join partitions this instance owns, their on-disk stores,
their restore, and what each transaction writes for them.

Within a transaction, changelog records are collected per partition and key, so a
key that changes several times is written once; window partials are published once
per changed window. After the transaction commits, each store takes its staged
changes and the changelog offset they reach (``RocksStore.commit``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from worker.kafka_io import Message
from worker.kafka_io.changelog import RestoreWatch, read_changelog, watermarks
from worker.kafka_io.config import Connection
from worker.kafka_io.tx import TxLoop
from worker.monitor.codec import Block, decode_block
from worker.monitor.join import JoinConfig
from worker.monitor.segments import DEFAULT_VALUES_MAX
from worker.monitor.stages import JoinPartition, Records, SpecFor
from worker.monitor.windows import WindowKey
from worker.monitor_app.rocks import RocksStore, shared_cache

log = logging.getLogger(__name__)
#: A local DB older than this is rebuilt from the changelog's start: the topic may
#: have dropped tombstones since (delete.retention.ms, 24 h by default).
STALE_AFTER_MS: Final = 12 * 3_600_000
RESTORE_CHUNK: Final = 50_000
MERGED_ROWS: Final = 20_000


@dataclass(kw_only=True)
class JoinStage:
    conf: Connection
    changelog: str  # the join changelog topic
    partials_topic: str
    state_dir: Path
    windows: Sequence[str]
    spec_for: SpecFor
    config: JoinConfig
    retain_ms: int
    segment_values_max: int = DEFAULT_VALUES_MAX
    cache_mib: int
    wall_ms: Callable[[], int]
    #: Hears how far a changelog restore got (liveness, readiness, gauges).
    restore: RestoreWatch | None = None
    joins: dict[int, JoinPartition] = field(default_factory=dict)
    stores: dict[int, RocksStore] = field(default_factory=dict)
    records: dict[int, Records] = field(default_factory=dict)
    delivered: dict[int, int] = field(default_factory=dict)
    #: When each partition last brought a block, or was first swept after its assignment
    #: (a monotonic clock, ``monotonic``): the start of its idle time.
    last_block: dict[int, float] = field(default_factory=dict)
    monotonic: Callable[[], float] = time.monotonic
    _cache: Any = None

    # -- assignment -----------------------------------------------------------------------
    def assign(self, p: int) -> None:
        if self._cache is None:
            self._cache = shared_cache(self.cache_mib)
        store = RocksStore(self.state_dir / f"join-{p}", self._cache)
        low, high = watermarks(self.conf, self.changelog, p)
        applied = store.applied()
        start: int | None = None
        if applied is not None and low <= applied[0] <= high \
                and self.wall_ms() - applied[1] < STALE_AFTER_MS:
            start = applied[0]
        elif applied is not None or store.scan(b"", b"\xff", 1):
            log.info("join partition %s: local state unusable, rebuilding from the changelog", p)
            store.wipe()
        jp = JoinPartition(p, self.windows, self.spec_for, store, self.config, self.retain_ms,
                           segment_values_max=self.segment_values_max)
        n, last = 0, (start or 0) - 1
        for key, value, offset in read_changelog(self.conf, self.changelog, p, start=start,
                                                 watch=self.restore):
            jp.restore(key, value)
            n, last = n + 1, offset
            if n % RESTORE_CHUNK == 0:
                store.commit(None, self.wall_ms())
        store.commit(last + 1 if last >= 0 else None, self.wall_ms())
        self.joins[p] = jp
        self.stores[p] = store
        log.info("join partition %s: %d changelog records replayed from %s", p, n,
                 "the start" if start is None else f"offset {start}")

    def revoke(self, p: int) -> None:
        self.joins.pop(p, None)
        self.records.pop(p, None)
        self.last_block.pop(p, None)
        store = self.stores.pop(p, None)
        if store is not None:
            store.close()  # staged changes are dropped: the DB stays at its last commit

    def close(self) -> None:
        for p in list(self.stores):
            self.revoke(p)

    # -- the loop -------------------------------------------------------------------------
    def apply(self, msgs: list[Message]) -> None:
        """The blocks of a poll, merged per partition up to MERGED_ROWS rows (fewer,
        larger numpy groupings and store lookups). A group is joined as soon as it is
        full: a poll of a backlog brings up to the consumer's prefetch of blocks
        (hundreds of thousands of rows, each about three times larger decoded than on
        the wire), and decoding all of them before joining any held them all at once."""
        groups: dict[int, list[Block]] = {}
        rows: dict[int, int] = {}
        for m in msgs:
            p = m.partition() or 0
            rows.setdefault(p, 0)
            jp = self.joins.get(p)
            if jp is None:
                continue  # revoked inside this poll: the next owner re-reads it
            block = decode_block(m.value() or b"")
            groups.setdefault(p, []).append(block)
            rows[p] += len(block)
            if rows[p] >= MERGED_ROWS:
                self._join(p, jp, groups.pop(p))
                rows[p] = 0
        for p, blocks in groups.items():
            self._join(p, self.joins[p], blocks)
        for p in rows:
            self.last_block[p] = self.monotonic()

    def _join(self, p: int, jp: JoinPartition, blocks: list[Block]) -> None:
        records, windows = jp.apply(Block.concat(blocks))
        self._collect(p, records, windows)

    def sweep(self, wall: int, idle_s: float, behind: bool = False) -> None:
        """Expire what is due. A partition's clock is the newest Kafka time it has seen
        while records flow (so a backlog is not expired before its own labels are
        read), and the wall clock once it has been idle for ``idle_s`` while this instance
        is not ``behind`` on its inputs. Idle time starts at a partition's first sweep, not
        at 0: restored after a restart, its pending predictions are older than the horizon
        by the wall clock while their labels still wait in a backlog it has not yet polled
        (expiring them there lost the joins; so did a slow catch-up, hence ``behind``)."""
        for p, jp in self.joins.items():
            quiet = self.monotonic() - self.last_block.setdefault(p, self.monotonic())
            idle = quiet >= idle_s and not behind
            now = jp.stream_ms if jp.stream_ms is not None and not idle else None
            now = max(wall, jp.stream_ms or wall) if now is None else now
            records, windows, _more = jp.sweep(now)
            self._collect(p, records, windows)

    def _collect(self, p: int, records: Records, _windows: set[WindowKey]) -> None:
        if records:
            self.records.setdefault(p, {}).update(records)

    def emit(self, loop: TxLoop) -> None:
        """Write the transaction's changelog records and partials (before the commit)."""
        for p, jp in self.joins.items():
            records, messages = jp.flush()
            records = {**self.records.pop(p, {}), **records}
            items = list(records.items())
            for i, (key, value) in enumerate(items):
                cb = self._delivered(p) if i == len(items) - 1 else None
                loop.send(self.changelog, key, value, partition=p, on_delivery=cb)
            for text_key, value in messages:
                loop.send(self.partials_topic, text_key.encode(), value)
        self.records.clear()

    def _delivered(self, p: int) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is None:
                self.delivered[p] = msg.offset()

        return done

    def committed(self) -> None:
        """The transaction committed: the stores take its changes."""
        wall = self.wall_ms()
        for p, store in self.stores.items():
            offset = self.delivered.pop(p, None)
            store.commit(None if offset is None else offset + 1, wall)
        self.delivered.clear()

    # -- gauges -----------------------------------------------------------------------------
    def newest_join_ms(self) -> int | None:
        times = [jp.newest_join_ms for jp in self.joins.values() if jp.newest_join_ms]
        return max(times) if times else None

    def disk_bytes(self) -> int:
        return sum(store.disk_bytes() for store in self.stores.values())

    def memory_bytes(self) -> int:
        """RocksDB's block cache with the memtables charged to it (all partitions)."""
        return 0 if self._cache is None else int(self._cache.cache.get_usage())
