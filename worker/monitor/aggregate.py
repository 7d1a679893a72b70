"""``WindowAgg``: the mergeable aggregate of one model version in one window.

It holds only exact integer counts, exact float sums (see ``exactsum``) and
sparse integer histograms, so ``merge`` is commutative and associative with
``WindowAgg()`` as identity, and equal inputs give equal values however they
were split or ordered. Figures are computed from it by ``catalog.metrics``.

Building values event by event would copy the histograms each time, so the
builders take batches (``fold_terms``, ``add_outcomes``, ``add_predictions``). The
monitor's per-window deltas of a batch are ``deltas.batch_deltas``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from worker.monitor import exactsum
from worker.monitor.exactsum import ExactSum
from worker.monitor.terms import Terms, outcome_terms, prediction_terms
from worker.monitor.views import ModelSpec, Outcome, PredictionView

__all__ = ["ModelSpec", "WindowAgg", "add_outcomes", "add_predictions", "fold_terms", "merge_all"]

TASKS: Final = ("binary", "multiclass", "regression")


@dataclass(frozen=True, slots=True)
class WindowAgg:
    """Counts, exact sums and sparse histograms; zero entries are never stored.

    counts: predicted (first sightings), count (valid labeled outcomes), expired,
    invalid, positives, tp, fp, tn, fn, correct, mape_count. sums: score,
    log_loss, brier (binary), log_loss (multiclass), abs_err, sq_err, ape
    (regression). hists: pos / neg (logit bins of the score by true class), psi
    (index of the reference bin of each prediction).
    """

    task: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    sums: Mapping[str, ExactSum] = field(default_factory=dict)
    hists: Mapping[str, Mapping[int, int]] = field(default_factory=dict)

    def merge(self, other: WindowAgg) -> WindowAgg:
        acc = _Acc(self)
        acc.absorb(other)
        return acc.freeze()

    @property
    def total(self) -> int:
        """Events folded in so far; it only grows, so a smaller total is an older value."""
        return sum(self.counts.get(k, 0) for k in ("predicted", "count", "expired", "invalid"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "counts": dict(sorted(self.counts.items())),
            "sums": {k: list(v) for k, v in sorted(self.sums.items())},
            "hists": {k: {str(b): n for b, n in sorted(h.items())}
                      for k, h in sorted(self.hists.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowAgg:
        task = data.get("task", "")
        if task not in ("", *TASKS):
            raise ValueError(f"unknown task {task!r} in a window aggregate")
        acc = _Acc(WindowAgg(str(task)))
        acc.absorb(WindowAgg(
            str(task),
            {str(k): int(v) for k, v in data.get("counts", {}).items()},
            {str(k): exactsum.parse_sum(v, f"sums.{k}") for k, v in data.get("sums", {}).items()},
            {str(k): {int(b): int(n) for b, n in h.items()}
             for k, h in data.get("hists", {}).items()},
        ))
        return acc.freeze()


def merge_all(aggs: Iterable[WindowAgg]) -> WindowAgg:
    acc = _Acc(WindowAgg())
    for agg in aggs:
        acc.absorb(agg)
    return acc.freeze()


class _Acc:
    """Mutable working copy of a WindowAgg; only ever used inside one function call.

    Sums are lists of every value added, made exact and canonical once, in freeze.
    """

    __slots__ = ("counts", "hists", "sums", "task")

    def __init__(self, agg: WindowAgg) -> None:
        self.task = agg.task
        self.counts: dict[str, int] = dict(agg.counts)
        self.sums: dict[str, list[float]] = {k: list(v) for k, v in agg.sums.items()}
        self.hists: dict[str, dict[int, int]] = {k: dict(h) for k, h in agg.hists.items()}

    def set_task(self, task: str) -> None:
        if task and self.task and task != self.task:
            raise ValueError(f"cannot merge a {task} aggregate into a {self.task} one")
        self.task = self.task or task

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def bin(self, hist: str, key: int, n: int = 1) -> None:
        h = self.hists.setdefault(hist, {})
        h[key] = h.get(key, 0) + n

    def absorb(self, other: WindowAgg) -> None:
        self.set_task(other.task)
        for k, n in other.counts.items():
            self.add(k, n)
        for k, s in other.sums.items():
            self.sums.setdefault(k, []).extend(s)
        for k, h in other.hists.items():
            for b, n in h.items():
                self.bin(k, b, n)

    def apply(self, task: str, terms: Terms) -> None:
        self.set_task(task)
        for name in terms.counts:
            self.add(name)
        for name, x in terms.sums:
            self.sums.setdefault(name, []).append(x)
        for hist, key in terms.bins:
            self.bin(hist, key)

    def freeze(self) -> WindowAgg:
        sums = {k: exactsum.canonical(v) for k, v in self.sums.items()}
        hists = {k: {b: n for b, n in h.items() if n} for k, h in self.hists.items()}
        return WindowAgg(
            self.task,
            {k: n for k, n in self.counts.items() if n},
            {k: s for k, s in sums.items() if s},
            {k: h for k, h in hists.items() if h},
        )


def fold_terms(agg: WindowAgg, task: str, terms: Iterable[Terms]) -> WindowAgg:
    """``agg`` with each event's terms folded in (events of one model version)."""
    acc = _Acc(agg)
    for t in terms:
        acc.apply(task, t)
    return acc.freeze()


def add_outcomes(agg: WindowAgg, outcomes: Iterable[Outcome], spec: ModelSpec) -> WindowAgg:
    """``agg`` with ``outcomes`` folded in, whatever windows they belong to."""
    return fold_terms(agg, spec.task, (outcome_terms(o, spec) for o in outcomes))


def add_predictions(
    agg: WindowAgg, predictions: Iterable[PredictionView], spec: ModelSpec
) -> WindowAgg:
    return fold_terms(agg, spec.task, (prediction_terms(p, spec) for p in predictions))
