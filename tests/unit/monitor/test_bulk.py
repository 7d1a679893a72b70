"""The block-at-a-time stage one equals the per-event rules of reference_join.py.

Property: a random stream (retries, repeated labels, labels early, late or never,
shadow versions, inline labels, several tasks) fed one event at a time through
reference_join.py's reducers and ``window_deltas`` gives the same window aggregates and join
counters, to the bit, as the same stream split at random into blocks, over join
partitions, and over two instances that hand partitions to each other through the
changelog (a restore into an empty store, as after a lost disk).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pytest

from tests.unit.monitor.gen import BINARY, REGRESSION, T0
from tests.unit.monitor.reference_join import (
    JoinConfig,
    JoinStats,
    Pending,
    add_expiry,
    add_step,
    expire,
    on_label,
    on_prediction,
    step_deltas,
    window_deltas,
)
from worker.monitor.aggregate import WindowAgg, merge_all
from worker.monitor.catalog import metrics
from worker.monitor.codec import Block, decode_block, decode_entry, encode_entry
from worker.monitor.stages import JoinPartition
from worker.monitor.store import MemoryStore
from worker.monitor.views import LabelView, ModelSpec, PredictionView
from worker.monitor.windows import WindowKey

H = 3_600_000  # horizon
DEDUP = 600_000  # markers live 10 minutes
CONFIG = JoinConfig(horizon_ms=H, dedup_ms=DEDUP)
WINDOWS = ("5m", "1h")
Message = PredictionView | LabelView


def spec_for(pred: PredictionView) -> ModelSpec:
    return REGRESSION if pred.model == "price" else BINARY


def random_stream(seed: int, n: int = 1200) -> list[tuple[int, Message]]:
    """(Kafka time, message) in time order over five hours."""
    rng = np.random.default_rng(seed)
    events: list[tuple[int, int, Message]] = []
    for i in range(n):
        t = T0 + int(rng.integers(0, 5 * H))
        model = "price" if i % 7 == 0 else "fraud"
        score = float(rng.normal(50, 20)) if model == "price" else float(rng.random() ** 3)
        decision: object = score if model == "price" else int(score >= 0.3)
        truth: object = round(score + float(rng.normal(0, 5)), 1) if model == "price" \
            else int(rng.random() < score + 0.05)
        inline = rng.random() < 0.05
        versions = ["1", "2"] if rng.random() < 0.2 else ["1"]  # shadow scoring
        for v in versions:
            for k in range(1 + int(rng.random() < 0.15)):  # retries, some after the dedup window
                at = t + int(rng.integers(0, 2 * DEDUP)) * k + int(v == "2")
                pred = PredictionView(f"e{i}", score if k == 0 else score / 2, decision, model,  # type: ignore[arg-type]
                                      v, at - 50, t - 100, truth if inline else None)
                events.append((at, 0, pred))
        if not inline and rng.random() < 0.85:
            lt = t + int(rng.normal(0.3, 0.6) * H)
            for k in range(1 + int(rng.random() < 0.15)):
                value = truth if k == 0 else (0 if model == "fraud" else -1.0)
                ts = lt - 7 if rng.random() < 0.5 else None
                events.append((lt + 30_000 * k, 1,
                               LabelView(f"e{i}", value, received_at=lt, ts=ts)))  # type: ignore[arg-type]
    if n > 10:
        events.append((T0 + 1, 1, LabelView("ghost", 1, received_at=T0 + 1)))
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, m) for t, _, m in events]


@dataclass
class Oracle:
    """One event at a time through reference_join.py and window_deltas (the reference)."""

    pending: dict[str, Pending] = field(default_factory=dict)
    table: dict[WindowKey, WindowAgg] = field(default_factory=dict)
    stats: JoinStats = field(default_factory=JoinStats)

    def feed(self, now: int, message: Message) -> None:
        if isinstance(message, PredictionView):
            step = on_prediction(self.pending.get(message.id), message, now, CONFIG)
        else:
            label = LabelView(message.id, message.value, now, message.ts)
            step = on_label(self.pending.get(message.id), label, now, CONFIG)
        if step.pending is None:
            self.pending.pop(message.id, None)
        else:
            self.pending[message.id] = step.pending
        self.stats = add_step(self.stats, step)
        self._merge(step_deltas([step], WINDOWS, spec_for))

    def sweep(self, now: int) -> None:
        expired: list[PredictionView] = []
        for ident in list(self.pending):
            expiry = expire(self.pending[ident], now, CONFIG.horizon_ms, CONFIG.dedup_ms)
            if expiry is not None:
                del self.pending[ident]
                self.stats = add_expiry(self.stats, expiry)
                expired.extend(expiry.expired_predictions)
        self._merge(window_deltas(WINDOWS, spec_for, expired=expired))

    def _merge(self, deltas: dict[WindowKey, WindowAgg]) -> None:
        for key, delta in deltas.items():
            self.table[key] = self.table.get(key, WindowAgg()).merge(delta)


def to_block(rows: list[tuple[int, Message]]) -> Block:
    block = Block()
    for now, m in rows:
        if isinstance(m, PredictionView):
            block.add_prediction(m.id, now, m.model, m.model_version, m.score, m.label,
                                 m.event_time, m.true_label)
        else:
            block.add_label(m.id, now, m.value, m.ts)
    return decode_block(block.encode())  # through the wire form, as in the app


class Instance:
    """Stage one of some partitions, each with its own store and compacted changelog."""

    def __init__(self, changelogs: dict[int, dict[bytes, bytes | None]]) -> None:
        self.parts: dict[int, JoinPartition] = {}
        self.changelogs = changelogs

    def take(self, p: int) -> None:
        """Own partition p: restore it from its changelog into an empty store."""
        store = MemoryStore()
        jp = JoinPartition(p, WINDOWS, spec_for, store, CONFIG)
        for key, value in self.changelogs[p].items():
            jp.restore(key, value)
        store.commit()
        self.parts[p] = JoinPartition(p, WINDOWS, spec_for, store, CONFIG)

    def run(self, p: int, step: Callable[[JoinPartition], dict[bytes, bytes | None]]) -> None:
        jp = self.parts[p]
        self.changelogs[p].update(step(jp))
        self.changelogs[p].update(jp.flush()[0])
        assert isinstance(jp.store, MemoryStore)
        jp.store.commit()


def chunks(rng: np.random.Generator, rows: list[tuple[int, Message]]) -> Iterator[
        list[tuple[int, Message]]]:
    i = 0
    while i < len(rows):
        n = int(rng.choice([1, 2, 5, 40, 300]))
        yield rows[i : i + n]
        i += n


def run_split(stream: list[tuple[int, Message]], seed: int, partitions: int,
              sweeps: list[int]) -> tuple[dict[WindowKey, WindowAgg], JoinStats]:
    """Blocks of random sizes, ids hashed over partitions, two instances that swap
    partitions now and then (restoring from the changelog), sweeps at given times."""
    rng = np.random.default_rng(seed)
    changelogs: dict[int, dict[bytes, bytes | None]] = {p: {} for p in range(partitions)}
    a, b = Instance(changelogs), Instance(changelogs)
    owner = {p: (a if p % 2 else b) for p in range(partitions)}
    for p, inst in owner.items():
        inst.take(p)
    per_part: dict[int, list[tuple[int, Message]]] = {p: [] for p in range(partitions)}
    for now, m in stream:
        per_part[hash_id(m.id) % partitions].append((now, m))
    for p, rows in per_part.items():
        bounds = [0, *sweeps, 1 << 62]
        for lo, hi in pairwise(bounds):
            part = [(t, m) for t, m in rows if lo <= t < hi]
            for chunk in chunks(rng, part):
                if rng.random() < 0.1:  # a rebalance: the partition moves with its state
                    old = owner[p]
                    owner[p] = b if old is a else a
                    del old.parts[p]
                    owner[p].take(p)
                block = to_block(chunk)
                owner[p].run(p, lambda jp, blk=block: jp.apply(blk)[0])  # type: ignore[misc]
            if hi < (1 << 62):
                owner[p].run(p, lambda jp, now=hi: jp.sweep(now)[0])  # type: ignore[misc]
    table: dict[WindowKey, list[WindowAgg]] = {}
    stats = JoinStats()
    for p in range(partitions):
        jp = owner[p].parts[p]
        stats = stats.merge(jp.stats)
        for key in window_keys(jp):
            table.setdefault(key, []).append(jp.partial(key))
    return {k: merge_all(v) for k, v in table.items()}, stats


def window_keys(jp: JoinPartition) -> list[WindowKey]:
    assert isinstance(jp.store, MemoryStore)
    return [WindowKey.parse_key(k[1:].decode()) for k, _ in jp.store.items(b"w")]


def hash_id(ident: str) -> int:
    return zlib.crc32(ident.encode())


def oracle(stream: list[tuple[int, Message]], sweeps: list[int]) -> Oracle:
    ref = Oracle()
    pending_sweeps = list(sweeps)
    for now, m in stream:
        while pending_sweeps and pending_sweeps[0] <= now:
            ref.sweep(pending_sweeps.pop(0))
        ref.feed(now, m)
    for s in pending_sweeps:
        ref.sweep(s)
    return ref


@pytest.mark.parametrize("seed", range(3))
def test_blocks_partitions_and_instances_give_the_per_event_figures_to_the_bit(
    seed: int,
) -> None:
    stream = random_stream(seed)
    sweeps = [T0 + k * H for k in range(1, 7)] + [T0 + 20 * H]
    ref = oracle(stream, sweeps)
    assert not ref.pending  # the last sweep expired everything
    counts = ref.stats.counts
    assert counts["duplicate_predictions"] and counts["duplicate_labels"]
    assert counts["expired_predictions"] and counts["unmatched_labels"]
    assert counts["joined_inline"] and counts["joined"]
    one_at_a_time, one_stats = run_split(stream, seed, 1, sweeps) if seed == 0 else (None, None)
    for partitions in (1, 4):
        got, stats = run_split(stream, seed + 10 * partitions, partitions, sweeps)
        assert stats == ref.stats
        assert got.keys() == ref.table.keys()
        for key, agg in ref.table.items():
            assert got[key] == agg, key
            assert metrics(got[key]) == metrics(agg)
    if one_at_a_time is not None:
        assert one_at_a_time == ref.table and one_stats == ref.stats


def test_entries_round_trip_in_compact_binary() -> None:
    shapes = [
        (0, T0, (("fraud", "1", 0.25, 1, T0 - 5, ""),)),
        (0, -5, (("m", "é", {"a": 0.5, "b": 0.5}, "b", 0, ""),
                 ("m", "2", 2.5, 2.5, 1 << 40, ""))),
        (1, T0, "fraud", T0 - 3),
        (1, T0, 1 << 70, T0),
        (2, T0, 1.5, T0, (("a|b", "1"), ("c", "2"))),
    ]
    for entry in shapes:
        raw = encode_entry(entry)
        assert decode_entry(raw) == entry
    assert len(encode_entry(shapes[0])) < 48


def test_a_lost_store_is_rebuilt_from_the_changelog_alone() -> None:
    stream = random_stream(5, 300)
    changelog: dict[bytes, bytes | None] = {}
    first = JoinPartition(0, WINDOWS, spec_for, MemoryStore(), CONFIG)
    half = len(stream) // 2
    changelog.update(first.apply(to_block(stream[:half]))[0])
    changelog.update(first.flush()[0])
    rebuilt = Instance({0: changelog})
    rebuilt.take(0)
    second = rebuilt.parts[0]
    assert second.stats == first.stats
    assert isinstance(first.store, MemoryStore) and isinstance(second.store, MemoryStore)
    first.store.commit()
    assert first.store.committed == second.store.committed  # entries, index, partials


def test_blocks_of_one_poll_concatenate_to_the_block_of_all_their_rows() -> None:
    stream = random_stream(7, 200)
    parts = [stream[:50], stream[50:51], stream[51:]]
    merged = Block.concat([to_block(rows) for rows in parts])
    whole = to_block(stream)
    assert merged.kinds == whole.kinds and merged.ids == whole.ids
    assert [merged.versions[c] if c >= 0 else None for c in merged.codes] == \
        [whole.versions[c] if c >= 0 else None for c in whole.codes]
    assert (merged.scores, merged.values, merged.times, merged.truths) == \
        (whole.scores, whole.values, whole.times, whole.truths)
