"""A batch's feature counts, overall and per segment value: what the pipeline hands the
worker's statistics buffer (worker/core/feature_stats.py).

Two parts are counted: the model's rows as the model got them, and the events refused
before it, as columns of ``lenient`` features (a refused value counts as missing). With
``segment_fields`` each part is also counted per value of each field
(worker/core/segment_counts.py); when every row of a part has a value of some field, the
overall counts are the sum of that field's groups, so the part is not counted twice. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from worker.core.columns import Columns, build_columns
from worker.core.feature_counts import AnyArray, CountLayout, IntArray, lenient
from worker.core.records import field_value, segment_value
from worker.core.segment_counts import SegmentCounts, count_by_value
from worker.model.feature_types import Feature


class BatchCounts(NamedTuple):
    """The counts of a batch's decoded events, the events counted, and per segment value
    (each field may come twice: the model's rows, then the refused events)."""

    counts: IntArray
    rows: int
    segments: tuple[SegmentCounts, ...]


def count_batch(layout: CountLayout, data: Columns | AnyArray, model_events: list[Any],
                model_rows: int, refused: list[dict[str, Any]], specs: Sequence[Feature],
                segment_fields: tuple[str, ...], limit: int) -> BatchCounts:
    """``data``: the model's rows (``model_events`` their events, needed with segments);
    ``refused``: the decoded events refused before the model."""
    parts: list[tuple[Columns | AnyArray, list[Any]]] = [(data, model_events)]
    if refused:
        parts.append((build_columns(refused, lenient(specs))[0], refused))
    counts, segments = layout.zeros(), []
    for part, events in parts:
        total = None
        for name in segment_fields:
            keys = [segment_value(field_value(e, name)) for e in events]
            seg = count_by_value(layout, part, name, keys, limit)
            segments.append(seg)
            if total is None and seg.covers == len(events):  # every row in a group
                total = seg.counts.sum(axis=0)
        counts += layout.count(part) if total is None else total
    return BatchCounts(counts, model_rows + len(refused), tuple(segments))
