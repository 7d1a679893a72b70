"""The label join, keyed by event id, a block of rows at a time against the pending table.

One entry per id (``codec.Entry``) holds either predictions waiting for their label
or a label waiting for its prediction (labels can arrive first). Once a pair joins,
the entry is kept as a *joined marker* (the label plus which model versions already
joined) until the horizon, so that a retried prediction or a repeated label is
recognised as a duplicate instead of being counted a second time. Predictions of
several model versions for the same id (shadow scoring) each join the one label; a
second prediction of the same model version is a duplicate.

The horizon is measured from when the entry was stored: the entry is alive while
``now_ms < stored_at + horizon_ms`` and due for expiry from ``stored_at + horizon_ms``
on. A join stores the marker anew, and a marker lives ``dedup_ms`` (by default a whole
horizon) from the join, so duplicates are recognised for that long after the join, not
only until the horizon of the first message. A row expires a due entry itself before
using it, so results do not depend on how often the caller sweeps (``sweep_due``).

``join_block`` looks every id of a block up once (``StateStore.get_many``), folds the
id's rows in order, and returns the final entry of every id it touched, plus what
happened (first sightings, joined outcomes, expiries, counters) as flat lists for
``deltas``. The same rules one message at a time, with typed values, are the tests'
oracle (tests/unit/monitor/reference_join.py); tests/unit/monitor/test_bulk.py holds
the two to bit-identical results.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from worker.monitor.codec import (
    JOINED,
    LABEL,
    WAITING,
    Block,
    Entry,
    ModelKey,
    Pred,
    decode_entry,
    encode_entry,
)
from worker.monitor.store import DUE, ENTRY, StateStore, due_key, split_due_key
from worker.monitor.views import LabelValue

DEFAULT_HORIZON_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class JoinConfig:
    horizon_ms: int = DEFAULT_HORIZON_MS
    # Without markers a joined entry is deleted at once: less state, but a retried
    # prediction after its label would be counted again and later expire unlabeled.
    keep_joined: bool = True
    #: How long a joined marker lives (None: a horizon); after it, a retried
    #: prediction or a second label of the id is taken as a new one.
    dedup_ms: int | None = None


DELAY_BUCKETS_S: Final = (1, 5, 30, 60, 300, 900, 3600, 21600, 86400, float("inf"))
_DELAY_BOUNDS_MS: Final = tuple(b * 1000 for b in DELAY_BUCKETS_S[:-1])
_COUNTERS: Final = (
    "predictions", "duplicate_predictions", "labels", "duplicate_labels", "joined",
    "joined_inline", "expired_predictions", "unmatched_labels",
)


@dataclass(frozen=True, slots=True)
class JoinStats:
    """Mergeable counters of the join plus the label-delay histogram.

    ``delay_counts[i]`` counts joins whose delay d (seconds, label time minus the
    prediction's event time, negative clock skew counted as 0) satisfies
    ``DELAY_BUCKETS_S[i-1] < d <= DELAY_BUCKETS_S[i]``; inline labels have no delay.
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    delay_counts: tuple[int, ...] = (0,) * len(DELAY_BUCKETS_S)

    def merge(self, other: JoinStats) -> JoinStats:
        counts = {k: self.counts.get(k, 0) + other.counts.get(k, 0) for k in _COUNTERS}
        delays = tuple(a + b for a, b in zip(self.delay_counts, other.delay_counts, strict=True))
        return JoinStats({k: v for k, v in counts.items() if v}, delays)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": {k: self.counts.get(k, 0) for k in _COUNTERS},
                "delay_counts": list(self.delay_counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinStats:
        counts = {k: int(data["counts"].get(k, 0)) for k in _COUNTERS}
        delays = tuple(int(c) for c in data["delay_counts"])
        if len(delays) != len(DELAY_BUCKETS_S):
            raise ValueError(f"delay_counts must have {len(DELAY_BUCKETS_S)} entries")
        return cls({k: v for k, v in counts.items() if v}, delays)


def delay_bucket(delay_ms: int) -> int:
    """Index of the delay bucket; the last bucket is unbounded."""
    return bisect_left(_DELAY_BOUNDS_MS, delay_ms)


Joined = tuple[Pred, LabelValue, int, int, bool]
"""An outcome: prediction, true label, label time, joined at, inline."""


@dataclass(slots=True)
class JoinOut:
    """What a block (or a sweep) did; ``entries``: final entry per id (None: deleted)."""

    new_preds: list[Pred] = field(default_factory=list)
    #: The top reason of each of ``new_preds`` (block rows' ``reasons``; "" when none).
    new_reasons: list[str] = field(default_factory=list)
    outcomes: list[Joined] = field(default_factory=list)
    expired: list[Pred] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    entries: dict[str, Entry | None] = field(default_factory=dict)
    before: dict[str, Entry | None] = field(default_factory=dict)
    invalid: int = 0
    newest_join_ms: int | None = None

    def stats(self) -> JoinStats:
        delays = [0] * len(DELAY_BUCKETS_S)
        for pred, _truth, label_time, _at, inline in self.outcomes:
            if not inline:
                delays[delay_bucket(label_time - pred[4])] += 1
        return JoinStats({k: v for k, v in self.counts.items() if v}, tuple(delays))


def lifetime(entry: Entry, config: JoinConfig) -> int:
    if entry[0] == JOINED and config.dedup_ms is not None:
        return config.dedup_ms
    return config.horizon_ms


def load(store: StateStore, ids: Iterable[str]) -> dict[str, Entry | None]:
    keys = list(dict.fromkeys(ids))
    raw = store.get_many([ENTRY + k.encode() for k in keys])
    return {k: None if v is None else decode_entry(v) for k, v in zip(keys, raw, strict=True)}


def join_block(block: Block, store: StateStore, config: JoinConfig) -> JoinOut:
    """Fold a block's rows into the pending table (read from ``store``, not written)."""
    out = JoinOut()
    counts = dict.fromkeys(_COUNTERS, 0)
    out.counts = counts
    state = load(store, [i for i in block.ids if i is not None])
    out.before = dict(state)
    versions = block.versions
    marker = config.keep_joined
    for row, kind in enumerate(block.kinds):
        if kind == "x":
            out.invalid += 1
            continue
        ident: Any = block.ids[row]
        now = block.ts[row]
        cur = state[ident]
        if cur is not None and now >= cur[1] + lifetime(cur, config):
            _expire(cur, out)
            cur = None
        if kind == "p":
            model, version = versions[block.codes[row]]
            pred: Pred = (model, version, block.scores[row], block.values[row],  # type: ignore[assignment]
                          block.times[row], block.segs[row])
            seen = len(out.new_preds)
            cur = _on_prediction(cur, pred, block.truths[row], now, marker, out)
            if len(out.new_preds) > seen:
                out.new_reasons.append(block.reasons[row])
        else:
            cur = _on_label(cur, block.values[row], block.times[row], now, marker, out)
        state[ident] = cur
    out.entries = state
    if out.outcomes:
        out.newest_join_ms = max(o[3] for o in out.outcomes)
    return out


def _has(cur: Entry, key: ModelKey) -> bool:
    if cur[0] == WAITING:
        return any(p[0] == key[0] and p[1] == key[1] for p in cur[2])
    return cur[0] == JOINED and key in cur[4]


def _on_prediction(cur: Entry | None, pred: Pred, truth: LabelValue | None, now: int,
                   marker: bool, out: JoinOut) -> Entry | None:
    counts = out.counts
    key = (pred[0], pred[1])
    if cur is not None and _has(cur, key):
        counts["duplicate_predictions"] += 1
        return cur
    counts["predictions"] += 1
    out.new_preds.append(pred)
    if cur is not None and cur[0] != WAITING:  # a label (or a joined marker) is there
        counts["joined"] += 1
        out.outcomes.append((pred, cur[2], cur[3], now, False))
        joined = (*cur[4], key) if cur[0] == JOINED else (key,)
        return (JOINED, now, cur[2], cur[3], joined) if marker else None
    if truth is not None:
        # The event brought its own truth (replays): it joins at once and, as the id's
        # first label, also completes other versions' waiting predictions.
        waiting = cur[2] if cur is not None else ()
        for p in waiting:
            counts["joined"] += 1
            out.outcomes.append((p, truth, now, now, False))
        counts["joined_inline"] += 1
        out.outcomes.append((pred, truth, now, now, True))
        joined = (*((p[0], p[1]) for p in waiting), key)
        return (JOINED, now, truth, now, joined) if marker else None
    if cur is None:
        return (WAITING, now, (pred,))
    return (WAITING, cur[1], (*cur[2], pred))


def _on_label(cur: Entry | None, value: Any, label_ts: int | None, now: int, marker: bool,
              out: JoinOut) -> Entry | None:
    counts = out.counts
    if cur is not None and cur[0] != WAITING:
        counts["duplicate_labels"] += 1
        return cur
    counts["labels"] += 1
    label_time = now if label_ts is None else label_ts
    if cur is None:
        return (LABEL, now, value, label_time)
    for p in cur[2]:
        counts["joined"] += 1
        out.outcomes.append((p, value, label_time, now, False))
    joined = tuple((p[0], p[1]) for p in cur[2])
    return (JOINED, now, value, label_time, joined) if marker else None


def _expire(cur: Entry, out: JoinOut) -> None:
    if cur[0] == WAITING:
        out.expired.extend(cur[2])
        out.counts["expired_predictions"] = out.counts.get("expired_predictions", 0) + len(cur[2])
    elif cur[0] == LABEL:
        out.counts["unmatched_labels"] = out.counts.get("unmatched_labels", 0) + 1


def sweep_due(store: StateStore, now: int, config: JoinConfig, limit: int) -> tuple[JoinOut, int]:
    """Expire entries due by ``now`` through the expiry index, at most ``limit`` index
    keys; returns what expired and how many index keys were read (== limit: more may
    be due). Stale index keys (the entry was stored anew or deleted) are dropped."""
    out = JoinOut(counts={})
    index = store.scan(DUE, due_key(now + 1, b""), limit)
    ids = [split_due_key(k)[1].decode() for k, _ in index]
    state = load(store, ids)
    out.before = dict(state)
    for key, _ in index:
        due, raw_id = split_due_key(key)
        ident = raw_id.decode()
        cur = state.get(ident)
        store.stage(key, None)
        if cur is None or cur[1] + lifetime(cur, config) != due:
            continue  # stale
        _expire(cur, out)
        state[ident] = None
    out.entries = {i: e for i, e in state.items() if e is None and out.before[i] is not None}
    return out, len(index)


def stage_entries(store: StateStore, out: JoinOut, config: JoinConfig) -> dict[bytes, bytes | None]:
    """Stage the final entries (and their expiry index keys); returns the changelog
    records: one per id whose entry changed."""
    changes: dict[bytes, bytes | None] = {}
    stage, before = store.stage, out.before
    horizon = config.horizon_ms
    dedup = horizon if config.dedup_ms is None else config.dedup_ms
    for ident, entry in out.entries.items():
        old = before.get(ident)
        if entry is old or entry == old:
            continue
        raw_id = ident.encode()
        key = ENTRY + raw_id
        value = None if entry is None else encode_entry(entry)
        stage(key, value)
        changes[key] = value
        old_due = None if old is None else old[1] + (dedup if old[0] == JOINED else horizon)
        new_due = None if entry is None else entry[1] + (dedup if entry[0] == JOINED else horizon)
        if old_due != new_due:
            if old_due is not None:
                stage(due_key(old_due, raw_id), None)
            if new_due is not None:
                stage(due_key(new_due, raw_id), b"")
    return changes
