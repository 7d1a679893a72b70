"""Per-feature figures per segment value: the ``segments`` of the workers' statistics
records (worker/core/feature_stats.py) summed per interval, field and value, and per window
the top K values by traffic (events counted) with their features ranked by drift, the rest
merged as ``__other__`` (``segments.top_values``: the cap of the accuracy segments too).

Memory is bounded per interval: at most ``values_max`` values of a field (first come; later
ones are summed under ``__other__``), as the join's stage one bounds the accuracy segments.
Sums are exact integer counts, so a value's window is exact whatever the split over workers
and records, as long as no cap merged it. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from worker.core.feature_counts import CountLayout, IntArray
from worker.core.feature_stats import SegmentStats
from worker.monitor.drift import FeatureFigures, feature_figures, ranked
from worker.monitor.segments import OTHER, top_values

Sums = tuple[int, IntArray]
#: field -> value -> (rows, counts)
SegmentSums = dict[str, dict[str, Sums]]


@dataclass(frozen=True, slots=True)
class SegmentFeatures:
    """One segment value's features over one window, the most drifted first."""

    field: str
    value: str
    rows: int
    features: tuple[FeatureFigures, ...]

    @property
    def segment(self) -> str:
        return f"{self.field}={self.value}"

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        return {"field": self.field, "segment": self.value, "rows": self.rows,
                "features": [f.to_dict() for f in self.features[:top]]}


def add_segments(held: SegmentSums, segments: Iterable[SegmentStats], counts_of: Any,
                 values_max: int) -> None:
    """Add a record's segments into one interval's sums (``counts_of``: tuple -> array)."""
    for seg in segments:
        values = held.setdefault(seg.field, {})
        value = seg.value
        if value not in values and value != OTHER and len(values) >= values_max:
            value = OTHER
        counts = counts_of(seg.counts)
        old = values.get(value)
        values[value] = (seg.rows, counts) if old is None else (old[0] + seg.rows,
                                                                old[1] + counts)


def sum_intervals(intervals: Iterable[SegmentSums]) -> SegmentSums:
    out: SegmentSums = {}
    for held in intervals:
        for field, values in held.items():
            into = out.setdefault(field, {})
            for value, (rows, counts) in values.items():
                old = into.get(value)
                into[value] = (rows, counts) if old is None else (old[0] + rows,
                                                                  old[1] + counts)
    return out


def segment_features(sums: SegmentSums, layout: CountLayout, k: int) -> list[SegmentFeatures]:
    """Per field (sorted), its top ``k`` values by events counted and ``__other__``."""
    out = []
    for field, values in sorted(sums.items()):
        for value, (rows, counts) in top_values(values, k, _traffic, _merge):
            figures = ranked([feature_figures(s.profile, counts[s.start : s.stop])
                              for s in layout.features])
            out.append(SegmentFeatures(field, value, rows, tuple(figures)))
    return out


def _traffic(sums: Sums) -> tuple[int]:
    return (sums[0],)


def _merge(parts: Sequence[Sums]) -> Sums:
    rows, counts = parts[0]
    for n, c in parts[1:]:
        rows, counts = rows + n, counts + c
    return rows, counts
