"""Joining scored-able events with their labels, and the time-ordered holdout split.

Pure: ids, times and label values in, row indices and counts out. Labels are
joined as the monitor joins them (worker/monitor/join.py): by ``id``, the first
label of an id wins, a label equals a class the way ``same_label`` says (1, 1.0
and "1" are one class). An event id seen twice (an at-least-once producer's
retry) counts once: the first one is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.model.manifest import ClassLabel
from worker.monitor.views import LabelValue, same_label


@dataclass(frozen=True, slots=True)
class LabelTable:
    """The first label of every id, and how many later ones were ignored."""

    first: Mapping[str, LabelValue]
    read: int
    duplicates: int


def label_table(pairs: Iterable[tuple[str, LabelValue]]) -> LabelTable:
    """``(id, label)`` pairs in the order they were read."""
    first: dict[str, LabelValue] = {}
    read = 0
    for key, value in pairs:
        read += 1
        first.setdefault(key, value)
    return LabelTable(first, read, read - len(first))


@dataclass(frozen=True, slots=True)
class Joined:
    """``rows[k]`` (an index into the caller's valid events) has class ``y[k]``, time
    ``times[k]``; the counts say what was dropped on the way."""

    rows: list[int] = field(default_factory=list)
    y: list[ClassLabel] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    duplicates: int = 0
    unlabeled: int = 0
    bad_labels: int = 0

    @property
    def labeled(self) -> int:
        return len(self.rows)

    def positives(self, positive: ClassLabel) -> int:
        return sum(1 for v in self.y if v == positive)


def join(
    ids: Sequence[str],
    times: Sequence[int],
    labels: LabelTable,
    classes: Sequence[ClassLabel],
) -> Joined:
    """Join valid events (``ids[i]`` at ``times[i]``) with ``labels``; each label is
    mapped onto one of the model's ``classes`` (a label that is none of them is bad)."""
    out = Joined()
    seen: set[str] = set()
    dups = unlabeled = bad = 0
    for i, key in enumerate(ids):
        if key in seen:
            dups += 1
            continue
        seen.add(key)
        value = labels.first.get(key)
        if value is None:
            unlabeled += 1
            continue
        cls = next((c for c in classes if same_label(value, c)), None)
        if cls is None:
            bad += 1
            continue
        out.rows.append(i)
        out.y.append(cls)
        out.times.append(times[i])
    return Joined(out.rows, out.y, out.times, dups, unlabeled, bad)


@dataclass(frozen=True, slots=True)
class Split:
    """Positions into the joined rows: ``train`` strictly before ``holdout`` in time."""

    train: list[int]
    holdout: list[int]
    #: The holdout's first time (epoch ms); every training row is older.
    cut_ms: int | None


def time_split(times: Sequence[int], holdout_fraction: float) -> Split:
    """The newest ``holdout_fraction`` of the rows (at least one) is the holdout; never
    a random split. Rows with equal times stay on one side: the holdout takes the
    whole run at its edge, so no training row is as new as a holdout row."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    order = sorted(range(len(times)), key=lambda k: (times[k], k))
    if not order:
        return Split([], [], None)
    cut = len(order) - max(1, math.ceil(len(order) * holdout_fraction))
    while cut > 0 and times[order[cut - 1]] == times[order[cut]]:
        cut -= 1
    return Split(order[:cut], order[cut:], times[order[cut]])


def coverage(labeled: int, valid: int) -> float | None:
    """Share of the valid, distinct events that had a usable label."""
    return labeled / valid if valid else None


def take(values: Sequence[Any], positions: Sequence[int]) -> list[Any]:
    return [values[k] for k in positions]
