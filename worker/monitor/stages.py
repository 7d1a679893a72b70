"""Stage one of the monitor as a state machine over blocks (no Kafka, no clock).

Stage one owns partitions of the join topic, whose messages are blocks of
predictions and labels (``codec.Block``) for ids that hash to the partition. Per
block it joins against the pending table (``join``), turns what happened into
per-window deltas (``deltas``) and merges them into the partition's partial
``WindowAgg`` of every window. All state lives in a ``StateStore``; every change is
also returned as changelog records (key -> value, None for a delete), one per key,
which the caller writes in the same Kafka transaction as the batch's offsets;
``restore`` reads them back. Stage two (``stage_global``) owns the partials topic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from worker.monitor.aggregate import WindowAgg
from worker.monitor.codec import Block, ModelKey, Pred, decode_entry
from worker.monitor.deltas import batch_deltas
from worker.monitor.join import (
    JoinConfig,
    JoinOut,
    JoinStats,
    join_block,
    lifetime,
    stage_entries,
    sweep_due,
)
from worker.monitor.reasons import cap_reasons
from worker.monitor.segments import DEFAULT_VALUES_MAX, Group, SegmentCap
from worker.monitor.store import ENTRY, STATS, WINDOW, StateStore, due_key, prefix_end
from worker.monitor.views import ModelSpec, PredictionView
from worker.monitor.windows import WindowKey

Changelog = dict[str, bytes | None]
"""Stage two's changelog records (text keys)."""
Records = dict[bytes, bytes | None]
"""Stage one's changelog records: store keys and values."""
SpecFor = Callable[[PredictionView], ModelSpec]
STATS_KEY: Final = "__stats__"
#: Partials kept in memory per partition; the others are read from the store when a
#: late label touches them.
CACHED_WINDOWS: Final = 256


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass
class JoinPartition:
    """Stage one for one partition of the join topic."""

    partition: int
    windows: Sequence[str]
    spec_for: SpecFor
    store: StateStore
    config: JoinConfig = field(default_factory=JoinConfig)
    #: Windows this far behind the newest event time are dropped (0: keep all).
    retain_ms: int = 0
    stats: JoinStats = field(default_factory=JoinStats)
    invalid: int = 0
    #: Kafka time of the newest record that completed a join, and of the newest record.
    newest_join_ms: int | None = None
    stream_ms: int | None = None
    partials: OrderedDict[WindowKey, WindowAgg] = field(default_factory=OrderedDict)
    #: Windows and counters changed since the last ``flush``.
    dirty: set[WindowKey] = field(default_factory=set)
    stats_dirty: bool = False
    #: Stream time of the last scan for windows past retention (done once a minute).
    evicted_at: int | None = None
    #: Distinct segment values kept per window and field; later ones go to "__other__".
    segment_values_max: int = DEFAULT_VALUES_MAX
    segment_cap: SegmentCap = field(init=False)

    def __post_init__(self) -> None:
        self.segment_cap = SegmentCap(self.segment_values_max, self._stored_values)
        self._read_stats()

    def _read_stats(self) -> None:
        raw = self.store.get_many([STATS])[0]
        if raw is not None:
            data = orjson.loads(raw)
            self.stats = JoinStats.from_dict(data["stats"])
            self.invalid = int(data.get("invalid", 0))
            self.stream_ms = data.get("stream_ms")

    # -- restore ----------------------------------------------------------------------
    def restore(self, key: bytes, value: bytes | None) -> None:
        """One changelog record back into the store (and the expiry index)."""
        kind = key[:1]
        if kind == ENTRY:
            old = self.store.get_many([key])[0]
            if old is not None:
                self.store.stage(due_key(self._due(old), key[1:]), None)
            if value is not None:
                self.store.stage(due_key(self._due(value), key[1:]), b"")
        elif kind not in (WINDOW, STATS):
            return  # a record of a future or past format: not ours to guess
        self.store.stage(key, value)
        if kind == WINDOW:
            self.partials.pop(WindowKey.parse_key(key[1:].decode()), None)
        elif kind == STATS:
            self._read_stats()

    def _due(self, raw: bytes) -> int:
        entry = decode_entry(raw)
        return int(entry[1]) + lifetime(entry, self.config)

    # -- blocks -----------------------------------------------------------------------
    def apply(self, block: Block) -> tuple[Records, set[WindowKey]]:
        """Fold one block; returns changelog records and the windows it changed."""
        out = join_block(block, self.store, self.config)
        if block.ts:
            newest = max(block.ts)
            self.stream_ms = newest if self.stream_ms is None else max(self.stream_ms, newest)
        return self._finish(out)

    def sweep(self, now_ms: int, limit: int = 50_000) -> tuple[Records, set[WindowKey], bool]:
        """Expire entries due by ``now_ms`` (at most ``limit``); the flag: more may be due."""
        out, read = sweep_due(self.store, now_ms, self.config, limit)
        changes, windows = self._finish(out) if read else ({}, set())
        if self.retain_ms and (self.evicted_at is None or now_ms - self.evicted_at >= 60_000):
            self.evicted_at = now_ms
            changes.update(self._evict(now_ms))
        return changes, windows, read >= limit

    def _finish(self, out: JoinOut) -> tuple[Records, set[WindowKey]]:
        changes = stage_entries(self.store, out, self.config)
        deltas = batch_deltas(self.windows, self._spec_of, out.new_preds, out.outcomes,
                              out.expired, out.new_reasons)
        self._merge(deltas, changes)
        if out.counts or out.invalid:
            self.stats = self.stats.merge(out.stats())
            self.invalid += out.invalid
            if out.newest_join_ms is not None:
                self.newest_join_ms = max(self.newest_join_ms or out.newest_join_ms,
                                          out.newest_join_ms)
            self.stats_dirty = True
        return changes, set(deltas)

    def flush(self) -> tuple[Records, list[tuple[str, bytes]]]:
        """What changed since the last flush, once per transaction: changelog records of
        the changed partials and counters, and the messages for the partials topic."""
        changes: Records = {}
        messages: list[tuple[str, bytes]] = []
        for key in sorted(self.dirty):
            agg = self.partials[key].to_dict()
            raw_key = WINDOW + key.kafka_key().encode()
            value = changes[raw_key] = dumps(agg)
            self.store.stage(raw_key, value)
            msg = {"source": str(self.partition), "window": key.kafka_key(), "agg": agg}
            messages.append((model_key(key.model, key.model_version), dumps(msg)))
        self.dirty.clear()
        while len(self.partials) > CACHED_WINDOWS:
            self.partials.popitem(last=False)
        if self.stats_dirty:
            value = changes[STATS] = dumps({"stats": self.stats.to_dict(),
                                            "invalid": self.invalid,
                                            "stream_ms": self.stream_ms})
            self.store.stage(STATS, value)
            messages.append(self.stats_message())
            self.stats_dirty = False
        return changes, messages

    def _spec_of(self, key: ModelKey, pred: Pred) -> ModelSpec:
        model, version, score, decision, event_time = pred[:5]
        return self.spec_for(PredictionView("", score, decision, model, version, event_time))

    # -- partials ---------------------------------------------------------------------
    def partial(self, key: WindowKey) -> WindowAgg:
        held = self.partials.get(key)
        if held is None:
            raw = self.store.get_many([WINDOW + key.kafka_key().encode()])[0]
            held = WindowAgg() if raw is None else WindowAgg.from_dict(orjson.loads(raw))
        self.partials[key] = held
        self.partials.move_to_end(key)
        return held

    def _merge(self, deltas: dict[WindowKey, WindowAgg], changes: Records) -> None:
        for key, delta in deltas.items():
            if key.segment:
                key = self.segment_cap.admit(key)
            held = self.partial(key)
            self.partials[key] = held.merge(cap_reasons(held, delta))
            self.dirty.add(key)

    def _stored_values(self, group: Group) -> list[str]:
        """The values of one window and field that the store holds (``SegmentCap.seed``)."""
        model, version, window, start, field_name = group
        head = WindowKey(model, version, window, start, f"{field_name}=").kafka_key()
        prefix = WINDOW + head.encode()
        stored = self.store.scan(prefix, prefix_end(prefix), 1 << 30)
        return [WindowKey.parse_key(k[1:].decode()).segment.partition("=")[2]
                for k, _ in stored]

    def _evict(self, now_ms: int) -> Records:
        changes: Records = {}
        start, stop = WINDOW, bytes((WINDOW[0] + 1,))
        for raw_key, _ in self.store.scan(start, stop, 1 << 30):
            key = WindowKey.parse_key(raw_key[1:].decode())
            if key.end_ms + self.retain_ms < now_ms:
                self.partials.pop(key, None)
                self.dirty.discard(key)
                self.segment_cap.forget(key)
                self.store.stage(raw_key, None)
                changes[raw_key] = None
        return changes

    def stats_message(self) -> tuple[str, bytes]:
        return STATS_KEY, dumps({"source": str(self.partition), "stats": self.stats.to_dict(),
                                 "invalid": self.invalid})


def model_key(model: str, version: str) -> str:
    """Partials are keyed by model and version: all windows of one version (and so the
    rolling view) are merged by one stage-two owner."""
    return f"{model}|{version}"


