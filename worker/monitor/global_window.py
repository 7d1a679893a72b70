"""The second aggregation stage: one window's partials from several sources, merged.

Each first-stage source (a partition of the joined stream, whichever instance owns
it at the moment) publishes its whole partial ``WindowAgg`` of a window every
time it changes. The second stage, keyed like the window, keeps the latest
partial per source and publishes the merge. Partials only grow, so one with
fewer events than the one held is an older copy (a replay) and is ignored.
Because merging is exact, the figures do not depend on how the stream was split
across sources or in which order the partials arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.monitor.aggregate import WindowAgg, merge_all
from worker.monitor.windows import ROLLING_SPAN_MS, ROLLING_STEP_MS, rolling_bucket_starts


@dataclass(frozen=True, slots=True)
class GlobalWindow:
    partials: Mapping[str, WindowAgg] = field(default_factory=dict)

    def update(self, source_id: str, partial: WindowAgg) -> GlobalWindow:
        held = self.partials.get(source_id)
        if held is not None and partial.total < held.total:
            return self
        return GlobalWindow({**self.partials, source_id: partial})

    def merged(self) -> WindowAgg:
        return merge_all(self.partials.values())

    @property
    def sources(self) -> int:
        return len(self.partials)

    def to_dict(self) -> dict[str, Any]:
        return {"partials": {k: self.partials[k].to_dict() for k in sorted(self.partials)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GlobalWindow:
        partials = data.get("partials", {})
        if not isinstance(partials, Mapping):
            raise ValueError("'partials' must be an object of source id -> aggregate")
        return cls({str(k): WindowAgg.from_dict(v) for k, v in partials.items()})


def rolling_view(
    buckets: Mapping[int, WindowAgg],
    now_ms: int,
    span_ms: int = ROLLING_SPAN_MS,
    step_ms: int = ROLLING_STEP_MS,
) -> WindowAgg:
    """Merge of the step-size buckets (by start) in the rolling view as of ``now_ms``;
    missing buckets are empty. See ``windows`` for the exact definition."""
    starts = rolling_bucket_starts(now_ms, span_ms, step_ms)
    return merge_all(buckets[s] for s in starts if s in buckets)
