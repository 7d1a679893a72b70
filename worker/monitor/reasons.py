"""The top reasons behind alerts: per window, how often each feature is an alert's top reason.

An *alert* is a first-sighted prediction of a binary model whose decision is the positive
class; its *top reason* is the feature with the largest positive contribution among the
prediction's ``reasons`` (``records.read_top_reason``: the first entry of ``top`` whose
contribution is above 0), or ``__none__`` when none of its reasons pushed the score up.
Predictions without reasons (no ``--explain``) do not count.

The counts live in the version's own ``WindowAgg`` as counts named ``top_reason:<feature>``
(``deltas.batch_deltas``), so they are exact window sums like every other count: merged
across join partitions, monitor instances and restarts by the same partials and
changelogs, with no state of their own.

Bounded twice, deterministically, as the segments are (segments.py):

- **Stage one** (``cap_reasons``): a partial holds at most ``REASONS_MAX`` distinct
  features per window; later ones count as ``__other__`` (first come by the partition's
  input order; the partial is read back from the store after a restart). Feature names
  are cut where they are read (``SEGMENT_VALUE_MAX`` characters).
- **Stage two** (``reason_rows``): the top ``TOP_K`` features by alerts (ties: by name),
  the rest merged into ``__other__``, from the merged exact counts.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from worker.core.records import NO_POSITIVE_REASON
from worker.monitor.aggregate import WindowAgg

PREFIX: Final = "top_reason:"
OTHER: Final = "__other__"
NONE: Final = NO_POSITIVE_REASON
#: Distinct features a join partition's partial keeps per window (a model has at most a
#: few hundred features; a larger count means names that are not features).
REASONS_MAX: Final = 256
#: Rows of the table per model version and window, before ``__other__``.
TOP_K: Final = 10


def count_name(feature: str) -> str:
    """The ``WindowAgg`` count of alerts whose top reason is ``feature``."""
    return PREFIX + feature


def reason_counts(agg: WindowAgg) -> dict[str, int]:
    """Feature -> alerts whose top reason it is, in ``agg``."""
    return {k[len(PREFIX):]: n for k, n in agg.counts.items() if k.startswith(PREFIX)}


def cap_reasons(held: WindowAgg, delta: WindowAgg, limit: int = REASONS_MAX) -> WindowAgg:
    """``delta`` with the features that would take ``held`` past ``limit`` distinct ones
    counted as ``__other__`` instead (``held``'s features, and ``__other__``, pass)."""
    known = {f for f in reason_counts(held) if f != OTHER}
    new = sorted(f for f in reason_counts(delta) if f not in known and f != OTHER)
    room = max(0, limit - len(known))
    if len(new) <= room:
        return delta
    # the delta of one block: its rows' order is gone, so its new names are admitted by name
    moved = new[room:]
    counts = {k: n for k, n in delta.counts.items()
              if not (k.startswith(PREFIX) and k[len(PREFIX):] in moved)}
    extra = sum(delta.counts[count_name(f)] for f in moved)
    counts[count_name(OTHER)] = counts.get(count_name(OTHER), 0) + extra
    return WindowAgg(delta.task, counts, delta.sums, delta.hists)


@dataclass(frozen=True, slots=True)
class ReasonRow:
    """One row of the table: ``alerts`` of the window had ``feature`` as top reason;
    ``share`` of the window's alerts that carry reasons."""

    feature: str
    alerts: int
    share: float


def reason_rows(agg: WindowAgg, k: int = TOP_K) -> list[ReasonRow]:
    """The top ``k`` features by alerts (ties: by name), then ``__other__`` (the rest and
    stage one's own ``__other__``; absent when empty). Empty when no alert had reasons."""
    counts = reason_counts(agg)
    total = sum(counts.values())
    if not total:
        return []
    real = sorted(((f, n) for f, n in counts.items() if f != OTHER), key=lambda fn: (-fn[1],
                                                                                      fn[0]))
    rest = sum(n for _, n in real[k:]) + counts.get(OTHER, 0)
    rows = [*real[:k], *([(OTHER, rest)] if rest else [])]
    return [ReasonRow(f, n, n / total) for f, n in rows]


def reasons_status(tables: Mapping[tuple[str, str, str], Sequence[ReasonRow]]
                   ) -> dict[str, list[dict[str, object]]]:
    """``/api/reasons``: per model version and window ("rolling" and the latest closed
    window of each size), the alerts that carry reasons and the table's rows in order."""
    windows: list[dict[str, object]] = []
    for (model, version, window), rows in sorted(tables.items()):
        windows.append({"model": model, "model_version": version, "window": window,
                        "alerts": sum(r.alerts for r in rows),
                        "rows": [{"feature": r.feature, "alerts": r.alerts, "share": r.share}
                                 for r in rows]})
    return {"windows": windows}
