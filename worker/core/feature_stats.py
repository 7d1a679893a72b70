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

DEFAULT_INTERVAL_MS: Final = 60_000
MAX_NAME_CHARS: Final = 256


class StatsError(ValueError):
    """A statistics record that cannot be used; the message is one short line."""


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

    @property
    def key(self) -> bytes:
        return self.model.encode()

    def encode(self) -> bytes:
        return orjson.dumps({
            "model": self.model, "model_version": self.model_version, "worker": self.worker,
            "interval_start": self.interval_start, "interval_ms": self.interval_ms,
            "profile": self.profile, "rows": self.rows, "counts": list(self.counts),
        })

    @classmethod
    def decode(cls, value: bytes | Mapping[str, Any]) -> FeatureStats:
        if isinstance(value, bytes | bytearray):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise StatsError(f"feature statistics are not JSON: {exc}") from None
        if not isinstance(value, Mapping):
            raise StatsError("feature statistics must be a JSON object")
        counts = value.get("counts")
        if not isinstance(counts, list) or not all(type(c) is int and c >= 0 for c in counts):
            raise StatsError("feature statistics: 'counts' must be a list of counts")
        return cls(_text(value, "model"), _text(value, "model_version"), _text(value, "worker"),
                   _int(value, "interval_start", None), _int(value, "interval_ms", 1),
                   _text(value, "profile"), _int(value, "rows", 0), tuple(counts))


@dataclass
class _Open:
    profile: str
    rows: int
    counts: IntArray


@dataclass
class StatsBuffer:
    """Counts added batch by batch, merged per (model, version, interval) until taken."""

    worker: str
    interval_ms: int = DEFAULT_INTERVAL_MS
    pending: dict[tuple[str, str, int], _Open] = field(default_factory=dict)

    def add(self, model: str, version: str, profile: str, counts: IntArray, rows: int,
            now_ms: int) -> None:
        if rows == 0:
            return
        key = (model, version, now_ms - now_ms % self.interval_ms)
        entry = self.pending.get(key)
        if entry is None:
            self.pending[key] = _Open(profile, rows, counts.astype(np.int64, copy=True))
        elif entry.profile != profile or entry.counts.shape != counts.shape:
            raise StatsError(f"{model} {version}: two profiles in one interval, never merged")
        else:
            entry.rows += rows
            entry.counts += counts

    def take(self) -> list[FeatureStats]:
        out = [FeatureStats(model, version, self.worker, start, self.interval_ms, e.profile,
                            e.rows, tuple(e.counts.tolist()))
               for (model, version, start), e in self.pending.items()]
        self.pending.clear()
        return out

    def clear(self) -> None:
        """Forget what was added (its events will be scored, and counted, again)."""
        self.pending.clear()

    def __bool__(self) -> bool:
        return bool(self.pending)


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
