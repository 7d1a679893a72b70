"""The feature statistics record: what the worker publishes on its statistics topic and
the monitor reads (schemas/feature_stats.schema.json), and the worker's buffer of them.

One record holds the exact feature counts (worker/core/feature_counts.py) of the events
one worker took with one model version in one interval of scoring time (every event that
decoded into an object, scored or dead-lettered: worker/core/pipeline.py, ``Scored``),
within one delivery unit: under exactly-once, one transaction (the record commits or
aborts with the predictions and dead letters it describes); under at-least-once, what
was taken since the last flush. ``profile`` names the reference profile the counts are
binned by (its digest), so a reader with another profile of that version refuses them
rather than misreading.

With the worker's ``segment_fields``, a record also holds the same counts per value of
each segment field (``segments``: worker/core/segment_counts.py), so the monitor keeps the
per-feature figures per segment. Cardinality is bounded per interval: at most
``segment_values`` distinct values of a field per model version and interval (first come,
in the worker's order); the counts of later values are merged under ``__other__``
(``OTHER_SEGMENT``, the monitor's name too). A record without ``segments`` (an older
worker, or none set) reads as one without segments.

Records are keyed by the model's name: one partition holds all of a model's records.
Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson

from worker.core.feature_counts import IntArray
from worker.core.records import OTHER_SEGMENT, SEGMENT_VALUE_MAX
from worker.core.segment_counts import DEFAULT_SEGMENT_VALUES, SegmentCounts

DEFAULT_INTERVAL_MS: Final = 60_000
MAX_NAME_CHARS: Final = 256


class StatsError(ValueError):
    """A statistics record that cannot be used; the message is one short line."""


@dataclass(frozen=True, slots=True)
class SegmentStats:
    """The counts of the events with one value of one segment field, in the record's layout."""

    field: str
    value: str
    rows: int
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "rows": self.rows,
                "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: object, size: int) -> SegmentStats:
        if not isinstance(data, Mapping):
            raise StatsError("feature statistics: each of 'segments' must be an object")
        value = data.get("value")
        if type(value) is not str or len(value) > SEGMENT_VALUE_MAX:
            raise StatsError("feature statistics: a segment's 'value' must be a string of at "
                             f"most {SEGMENT_VALUE_MAX} characters")
        counts = _counts(data)
        if len(counts) != size:
            raise StatsError("feature statistics: a segment's counts differ in length from "
                             "the record's")
        return cls(_text(data, "field"), value, _int(data, "rows", 0), counts)


@dataclass(frozen=True, slots=True)
class FeatureStats:
    model: str
    model_version: str
    worker: str
    interval_start: int
    interval_ms: int
    profile: str
    rows: int
    counts: tuple[int, ...]
    segments: tuple[SegmentStats, ...] = ()

    @property
    def key(self) -> bytes:
        return self.model.encode()

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "model": self.model, "model_version": self.model_version, "worker": self.worker,
            "interval_start": self.interval_start, "interval_ms": self.interval_ms,
            "profile": self.profile, "rows": self.rows, "counts": list(self.counts),
        }
        if self.segments:
            data["segments"] = [s.to_dict() for s in self.segments]
        return orjson.dumps(data)

    @classmethod
    def decode(cls, value: bytes | Mapping[str, Any]) -> FeatureStats:
        if isinstance(value, bytes | bytearray):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise StatsError(f"feature statistics are not JSON: {exc}") from None
        if not isinstance(value, Mapping):
            raise StatsError("feature statistics must be a JSON object")
        counts = _counts(value)
        segments = value.get("segments", [])
        if not isinstance(segments, list):
            raise StatsError("feature statistics: 'segments' must be a list")
        return cls(_text(value, "model"), _text(value, "model_version"), _text(value, "worker"),
                   _int(value, "interval_start", None), _int(value, "interval_ms", 1),
                   _text(value, "profile"), _int(value, "rows", 0), counts,
                   tuple(SegmentStats.from_dict(s, len(counts)) for s in segments))


@dataclass
class _Open:
    profile: str
    rows: int
    counts: IntArray
    #: (field, value) -> [rows, counts]
    segments: dict[tuple[str, str], tuple[int, IntArray]] = field(default_factory=dict)


@dataclass
class StatsBuffer:
    """Counts added batch by batch, merged per (model, version, interval) until taken."""

    worker: str
    interval_ms: int = DEFAULT_INTERVAL_MS
    #: Distinct values of a segment field kept per model version and interval.
    segment_values: int = DEFAULT_SEGMENT_VALUES
    pending: dict[tuple[str, str, int], _Open] = field(default_factory=dict)
    #: (model, version, interval, field) -> the values admitted so far in that interval,
    #: kept across ``take`` so that the cap holds per interval, not per delivery unit.
    admitted: dict[tuple[str, str, int, str], set[str]] = field(default_factory=dict)

    def add(self, model: str, version: str, profile: str, counts: IntArray, rows: int,
            now_ms: int, segments: tuple[SegmentCounts, ...] = ()) -> None:
        if rows == 0:
            return
        key = (model, version, now_ms - now_ms % self.interval_ms)
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = _Open(profile, 0, np.zeros_like(counts, np.int64))
        elif entry.profile != profile or entry.counts.shape != counts.shape:
            raise StatsError(f"{model} {version}: two profiles in one interval, never merged")
        entry.rows += rows
        entry.counts += counts
        for seg in segments:
            self._add_segments(key, entry, seg)

    def _add_segments(self, key: tuple[str, str, int], entry: _Open,
                      seg: SegmentCounts) -> None:
        seen = self.admitted.get((*key, seg.field))
        if seen is None:
            self._forget_before(key)
            seen = self.admitted[(*key, seg.field)] = set()
        held, past = entry.segments, []
        for i, value in enumerate(seg.values):
            if value not in seen:
                if value == OTHER_SEGMENT or len(seen) >= self.segment_values:
                    past.append(i)  # merged below, in one sum (a field of many values)
                    continue
                seen.add(value)
            _merge(held, (seg.field, value), int(seg.rows[i]), seg.counts[i])
        if past:
            _merge(held, (seg.field, OTHER_SEGMENT), int(seg.rows[past].sum()),
                   seg.counts[past].sum(axis=0))

    def _forget_before(self, key: tuple[str, str, int]) -> None:
        """Admitted values of the version's earlier intervals: past, never asked again."""
        for old in [k for k in self.admitted if k[:2] == key[:2] and k[2] < key[2]]:
            del self.admitted[old]

    def take(self) -> list[FeatureStats]:
        out = [FeatureStats(model, version, self.worker, start, self.interval_ms, e.profile,
                            e.rows, tuple(e.counts.tolist()),
                            tuple(SegmentStats(f, v, n, tuple(c.tolist()))
                                  for (f, v), (n, c) in sorted(e.segments.items())))
               for (model, version, start), e in self.pending.items()]
        self.pending.clear()
        return out

    def clear(self) -> None:
        """Forget what was added (its events will be scored, and counted, again)."""
        self.pending.clear()

    def __bool__(self) -> bool:
        return bool(self.pending)


def _merge(held: dict[tuple[str, str], tuple[int, IntArray]], key: tuple[str, str],
           rows: int, counts: IntArray) -> None:
    old = held.get(key)
    held[key] = (rows, counts.copy()) if old is None else (old[0] + rows, old[1] + counts)


def _counts(data: Mapping[str, Any]) -> tuple[int, ...]:
    counts = data.get("counts")
    if not isinstance(counts, list) or not all(type(c) is int and c >= 0 for c in counts):
        raise StatsError("feature statistics: 'counts' must be a list of counts")
    return tuple(counts)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise StatsError(f"feature statistics: {key!r} must be a non-empty string")
    return value


def _int(data: Mapping[str, Any], key: str, minimum: int | None) -> int:
    value = data.get(key)
    if type(value) is not int or (minimum is not None and value < minimum):
        raise StatsError(f"feature statistics: {key!r} must be an integer"
                         + ("" if minimum is None else f" >= {minimum}"))
    return value
