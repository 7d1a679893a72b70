"""Tumbling windows aligned to the Unix epoch, and the rolling one-hour view.

A window of size S covers ``[start, start + S)`` with ``start = ts - ts mod S``
(floor division, so times before 1970 work too). An outcome is placed by the
prediction's event time, else its scoring time (``PredictionView.event_time``).

The rolling view hops on the 5-minute buckets: as of ``now`` it is the merge of
the buckets whose *start* lies in ``(now - 1h, now]``: the 12 most recent
buckets, covering ``[E - 1h, E)`` with ``E = window_start(now, 5m) + 5m``. The
bucket still filling is included, because live gauges must show the newest
events; the view therefore spans between 55 and 60 minutes of elapsed time and
moves in 5-minute steps. Because buckets are by event time and labels come late,
its newest buckets hold few labeled outcomes at first; alert rules' ``min_count``
keeps them from deciding on too little.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from worker.core.records import escape_key_part, unescape_key_part

SECOND_MS: Final = 1000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
ROLLING: Final = "rolling"
ROLLING_SPAN_MS: Final = HOUR_MS
ROLLING_STEP: Final = "5m"
ROLLING_STEP_MS: Final = 5 * MINUTE_MS

_UNITS: Final = {"ms": 1, "s": SECOND_MS, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS}
_SPEC_RE: Final = re.compile(r"([1-9][0-9]{0,8})(ms|s|m|h|d)")


def parse_window(spec: str) -> int:
    """Window size in ms of a spec such as "30s", "5m", "1h", "1d" (also "250ms")."""
    if not isinstance(spec, str):
        raise ValueError(f"bad window {spec!r}: expected a string such as '5m'")
    return _parse_window(spec)


@lru_cache(maxsize=256)
def _parse_window(spec: str) -> int:
    # Cached: keys are built per event on the hot path, from a handful of specs.
    match = _SPEC_RE.fullmatch(spec)
    if match is None:
        raise ValueError(
            f"bad window {spec!r}: expected a positive integer followed by ms, s, m, h or d "
            "(for example '30s', '5m', '1h', '1d')"
        )
    return int(match[1]) * _UNITS[match[2]]


def check_window(spec: str) -> str:
    """``spec`` itself when it is "rolling" or a valid size; ValueError otherwise."""
    if spec != ROLLING:
        parse_window(spec)
    return spec


def window_start(ts_ms: int, size_ms: int) -> int:
    return ts_ms - ts_ms % size_ms


def window_bounds(ts_ms: int, size_ms: int) -> tuple[int, int]:
    start = window_start(ts_ms, size_ms)
    return start, start + size_ms


def rolling_bounds(
    now_ms: int, span_ms: int = ROLLING_SPAN_MS, step_ms: int = ROLLING_STEP_MS
) -> tuple[int, int]:
    """``(start, end)`` of the rolling view as of ``now_ms``: ``[E - span, E)`` where E is
    the end of the bucket in progress. Live gauges need the newest events, so the bucket
    still filling is part of the view; the oldest bucket is then partly older than 1 h."""
    if span_ms <= 0 or step_ms <= 0 or span_ms % step_ms:
        raise ValueError("the rolling span must be a positive multiple of its step")
    end = window_start(now_ms, step_ms) + step_ms
    return end - span_ms, end


def rolling_bucket_starts(
    now_ms: int, span_ms: int = ROLLING_SPAN_MS, step_ms: int = ROLLING_STEP_MS
) -> list[int]:
    """Starts of the buckets merged into the rolling view as of ``now_ms``, oldest first."""
    start, end = rolling_bounds(now_ms, span_ms, step_ms)
    return list(range(start, end, step_ms))


def in_rolling_view(
    bucket_start: int, now_ms: int, span_ms: int = ROLLING_SPAN_MS,
    step_ms: int = ROLLING_STEP_MS,
) -> bool:
    """Whether the bucket ``[bucket_start, bucket_start + step)`` is in the view at ``now_ms``:
    its start lies in ``(now - span, now]``."""
    return now_ms - span_ms < bucket_start <= now_ms


@dataclass(frozen=True, slots=True, order=True)
class WindowKey:
    """One published window of one model version: a tumbling window or the rolling view.

    ``segment``: "" for the version's own figures; ``field=value`` for those of one segment
    value (worker/monitor/segments.py), kept beside them with the same machinery."""

    model: str
    model_version: str
    window: str
    start_ms: int
    segment: str = ""

    def __post_init__(self) -> None:
        check_window(self.window)

    @property
    def size_ms(self) -> int:
        return ROLLING_SPAN_MS if self.window == ROLLING else parse_window(self.window)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.size_ms

    def kafka_key(self) -> str:
        """``model|version|window|start``; the rolling view has no start, so that a
        compacted topic keeps only its latest figures. A segment's window adds
        ``|field=value``."""
        parts = [escape_key_part(self.model), escape_key_part(self.model_version), self.window]
        if self.window != ROLLING:
            parts.append(str(self.start_ms))
        if self.segment:
            parts.append(escape_key_part(self.segment))
        return "|".join(parts)

    @classmethod
    def parse_key(cls, key: str) -> WindowKey:
        """Inverse of ``kafka_key`` for tumbling windows (table keys)."""
        parts = key.split("|")
        if len(parts) not in (4, 5) or parts[2] == ROLLING:
            raise ValueError(f"bad window key {key!r}: expected model|version|window|start")
        try:
            start = int(parts[3])
        except ValueError:
            raise ValueError(f"bad window key {key!r}: start is not an integer") from None
        segment = unescape_key_part(parts[4]) if len(parts) == 5 else ""
        return cls(unescape_key_part(parts[0]), unescape_key_part(parts[1]), parts[2], start,
                   segment)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "model_version": self.model_version,
                "window": self.window, "start_ms": self.start_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowKey:
        return cls(str(data["model"]), str(data["model_version"]), str(data["window"]),
                   int(data["start_ms"]))


def keys_for(
    model: str, model_version: str, ts_ms: int, windows: Sequence[str]
) -> list[WindowKey]:
    """The tumbling window of each size that contains ``ts_ms``."""
    return [WindowKey(model, model_version, w, window_start(ts_ms, parse_window(w)))
            for w in windows]


def rolling_key(model: str, model_version: str, now_ms: int) -> WindowKey:
    return WindowKey(model, model_version, ROLLING, rolling_bounds(now_ms)[0])


@dataclass(frozen=True, slots=True)
class WindowSize:
    """One configured tumbling window: its name as written ("5m") and its length."""

    name: str
    ms: int


def parse_windows(text: str) -> tuple[WindowSize, ...]:
    """Comma-separated window sizes ("5m,1h") in order; ValueError naming the bad one."""
    names = [w.strip() for w in text.split(",") if w.strip()]
    if not names:
        raise ValueError("no window size given")
    sizes = []
    for name in names:
        try:
            sizes.append(WindowSize(name, parse_window(name)))
        except ValueError:
            raise ValueError(f"{name!r} is not a window size") from None
    return tuple(sizes)
