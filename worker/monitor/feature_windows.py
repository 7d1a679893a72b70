"""Per-feature windows from the workers' feature statistics (worker/core/feature_stats.py):
the counts of every record summed per model version and interval, merged into the
monitor's windows, and turned into figures (worker/monitor/drift.py), ranked.

A record belongs to the window that holds its ``interval_start`` (scoring time): with
an interval that divides the window sizes (the worker's 1 minute and the monitor's 5m,
1h) a window holds exactly the events scored within it. The rolling view is the buckets
the accuracy figures' rolling view holds (worker/monitor/windows.py).

Counts are summed as they come: each record is one worker's delivery unit, published
once under exactly-once, so the sums are exact; the caller reads each record once (the
statistics topic from the start of the retention, read_committed). Memory is bounded:
intervals older than ``retain_ms`` are dropped (``expire``).

Records with ``segments`` keep the same figures per segment value (feature_segments.py):
each window's top K values by events counted per field, and ``__other__``.

Feature drift is off for a model version without a reference profile: ``off_reason``
says why, per version. Pure: time is passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from worker.core.feature_counts import CountLayout, IntArray
from worker.core.feature_stats import FeatureStats
from worker.model.profile import Profile
from worker.monitor.drift import FeatureFigures, feature_figures, ranked
from worker.monitor.feature_segments import (
    SegmentFeatures,
    SegmentSums,
    add_segments,
    segment_features,
    sum_intervals,
)
from worker.monitor.segments import DEFAULT_TOP_K, DEFAULT_VALUES_MAX
from worker.monitor.windows import ROLLING, parse_window, rolling_bounds, window_start

ModelKey = tuple[str, str]
NO_BUNDLE: Final = "no bundle of this version was given to the monitor (--models)"
NO_PROFILE: Final = "its bundle has no reference profile (write_bundle(..., reference=rows))"


@dataclass(frozen=True, slots=True)
class FeatureWindow:
    """One window's figures of one model version, the most drifted feature first, and
    each feature's summed counts (its slice of the layout, worker/core/feature_counts.py:
    the bins, then the tail slots) that the figures come from."""

    model: str
    model_version: str
    window: str
    start_ms: int
    rows: int
    features: tuple[FeatureFigures, ...]
    end_ms: int = 0
    counts: tuple[tuple[int, ...], ...] = ()  # in the order of ``features``
    #: Per segment field, its top K values and ``__other__`` (feature_segments.py).
    segments: tuple[SegmentFeatures, ...] = ()

    def to_dict(self) -> dict[str, object]:
        features = [f.to_dict() for f in self.features]
        for data, counts in zip(features, self.counts, strict=False):
            data["counts"] = list(counts)  # type: ignore[assignment]
        return {"model": self.model, "model_version": self.model_version,
                "window": self.window, "window_start": self.start_ms,
                "window_end": self.end_ms, "rows": self.rows, "features": features}


@dataclass
class _Version:
    profile: Profile
    layout: CountLayout
    digest: str
    #: interval start -> (rows, counts)
    intervals: dict[int, tuple[int, IntArray]] = field(default_factory=dict)
    #: interval start -> its sums per segment field and value
    segments: dict[int, SegmentSums] = field(default_factory=dict)


@dataclass
class FeatureWindows:
    """``profiles``: by (model, version), the bundle's profile or None (the bundle has
    none); ``lookup`` answers for versions not in it (None: no bundle known)."""

    retain_ms: int
    profiles: dict[ModelKey, Profile | None] = field(default_factory=dict)
    lookup: Callable[[ModelKey], Profile | None] | None = None
    versions: dict[ModelKey, _Version] = field(default_factory=dict)
    #: Records not counted, by reason (bounded: a handful of reasons).
    refused: Counter[str] = field(default_factory=Counter)
    #: Model versions seen in records whose drift is off, with the reason.
    off: dict[ModelKey, str] = field(default_factory=dict)
    #: Segment values shown per field and window (the monitor's segment_top_k).
    top_k: int = DEFAULT_TOP_K
    #: Values of a field kept per interval (the monitor's segment_values_max).
    values_max: int = DEFAULT_VALUES_MAX

    def add(self, stats: FeatureStats) -> None:
        key = (stats.model, stats.model_version)
        version = self._version(key)
        if version is None:
            self.refused["drift off"] += 1
            return
        if stats.profile != version.digest or len(stats.counts) != version.layout.size:
            self.refused["another profile"] += 1
            return
        counts = np.asarray(stats.counts, dtype=np.int64)
        rows, sums = version.intervals.get(stats.interval_start, (0, None))
        version.intervals[stats.interval_start] = (
            rows + stats.rows, counts if sums is None else sums + counts)
        if stats.segments:
            add_segments(version.segments.setdefault(stats.interval_start, {}),
                         stats.segments, _array, self.values_max)

    def _version(self, key: ModelKey) -> _Version | None:
        if key in self.versions:
            return self.versions[key]
        if key in self.off:
            return None
        profile = self.profiles.get(key)
        if key not in self.profiles and self.lookup is not None:
            profile = self.lookup(key)
        if profile is None:
            self.off[key] = NO_PROFILE if key in self.profiles else NO_BUNDLE
            return None
        version = _Version(profile, CountLayout.of(profile), profile.digest())
        self.versions[key] = version
        return version

    def off_reason(self, model: str, version: str) -> str | None:
        return self.off.get((model, version))

    def expire(self, now_ms: int) -> None:
        horizon = now_ms - self.retain_ms
        for version in self.versions.values():
            for start in [s for s in version.intervals if s < horizon]:
                del version.intervals[start]
                version.segments.pop(start, None)

    def window(self, key: ModelKey, spec: str, now_ms: int) -> FeatureWindow | None:
        """The figures of window ``spec`` ("5m", "rolling", ...) as of ``now_ms``."""
        version = self.versions.get(key)
        if version is None:
            return None
        start, end = _bounds(spec, now_ms)
        rows, sums = 0, version.layout.zeros()
        for at, (n, counts) in version.intervals.items():
            if start <= at < end:
                rows, sums = rows + n, sums + counts
        slices = {s.profile.name: sums[s.start : s.stop] for s in version.layout.features}
        figures = ranked([feature_figures(s.profile, slices[s.profile.name])
                          for s in version.layout.features])
        segments = sum_intervals(held for at, held in version.segments.items()
                                 if start <= at < end)
        return FeatureWindow(key[0], key[1], spec, start, rows, tuple(figures), end,
                             tuple(tuple(slices[f.name].tolist()) for f in figures),
                             tuple(segment_features(segments, version.layout, self.top_k)))

    def windows(self, specs: tuple[str, ...], now_ms: int) -> list[FeatureWindow]:
        out = []
        for key in sorted(self.versions):
            for spec in specs:
                w = self.window(key, spec, now_ms)
                if w is not None:
                    out.append(w)
        return out


def _array(counts: tuple[int, ...]) -> IntArray:
    return np.asarray(counts, dtype=np.int64)


def _bounds(spec: str, now_ms: int) -> tuple[int, int]:
    if spec == ROLLING:
        return rolling_bounds(now_ms)
    size = parse_window(spec)
    start = window_start(now_ms, size)
    return start, start + size
