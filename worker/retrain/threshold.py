"""Choosing a binary decision threshold on the holdout, for a target the policy sets.

The decision rule is the worker's: positive when ``score >= threshold``
(worker/core/scoring.py). Every candidate threshold is one of the holdout's
own scores, so the figures reported for the chosen one are exactly what the
worker's decisions give on those rows. Pure: plain arrays in, a value out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

TargetKind: TypeAlias = Literal["precision", "alert_rate", "f1", "keep"]
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("precision", "alert_rate", "f1", "keep")


@dataclass(frozen=True, slots=True)
class ThresholdTarget:
    """What the threshold must achieve on the holdout.

    ``precision``: the lowest threshold whose precision is at least ``value`` (so the
    most recall at that precision); ``alert_rate``: the lowest threshold that flags
    at most a ``value`` share of events; ``f1``: the best F1; ``keep``: the
    champion's threshold, unchanged.
    """

    kind: TargetKind = "keep"
    value: float | None = None

    def describe(self) -> str:
        if self.kind == "precision":
            return f"precision >= {self.value:g}"
        if self.kind == "alert_rate":
            return f"alert rate <= {self.value:g}"
        return "best F1" if self.kind == "f1" else "the champion's threshold"


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """The chosen threshold and what it gives on the holdout."""

    threshold: float
    met: bool  # False: no threshold reaches the target; the closest one was taken
    precision: float | None
    recall: float | None
    alert_rate: float

    def to_dict(self) -> dict[str, float | bool | None]:
        return {"threshold": self.threshold, "met": self.met, "precision": self.precision,
                "recall": self.recall, "alert_rate": self.alert_rate}


@dataclass(frozen=True, slots=True)
class _Curve:
    """Per distinct score, highest first: events flagged and true positives among them
    when the threshold is that score."""

    thresholds: npt.NDArray[np.float64]
    flagged: npt.NDArray[np.int64]
    hits: npt.NDArray[np.int64]
    positives: int
    n: int


def _curve(scores: npt.ArrayLike, positive: npt.ArrayLike) -> _Curve:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # The last row of each run of equal scores: a threshold flags the whole run.
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.empty(0, np.int64)
    hits = np.cumsum(y)[ends] if s.size else np.empty(0, np.int64)
    return _Curve(s[ends], ends + 1, hits.astype(np.int64), int(y.sum()), int(s.size))


def choose_threshold(
    scores: npt.ArrayLike, positive: npt.ArrayLike, target: ThresholdTarget, current: float
) -> ThresholdChoice:
    """The threshold for ``target`` on these scores and true classes; ``current`` is the
    champion's (used by ``keep``, and when there are no scores at all)."""
    c = _curve(scores, positive)
    if c.n == 0 or target.kind == "keep":
        return _at(c, current, met=True)
    if target.kind == "f1":
        f1 = 2 * c.hits / np.maximum(c.flagged + c.positives, 1)
        return _at(c, float(c.thresholds[int(np.argmax(f1))]), met=True)
    assert target.value is not None
    if target.kind == "precision":
        ok = np.flatnonzero(c.hits >= target.value * c.flagged - 1e-12)
        if ok.size:
            return _at(c, float(c.thresholds[ok[-1]]), met=True)
        # Unreachable: the most precise threshold, said to miss its target.
        return _at(c, float(c.thresholds[int(np.argmax(c.hits / c.flagged))]), met=False)
    ok = np.flatnonzero(c.flagged <= target.value * c.n + 1e-9)
    # None fits (the top scores tie): flag nothing rather than too much.
    chosen = c.thresholds[ok[-1]] if ok.size else np.nextafter(c.thresholds[0], np.inf)
    choice = _at(c, float(chosen), met=True)
    return replace(choice, met=choice.alert_rate <= target.value + 1e-9)


def _at(c: _Curve, threshold: float, met: bool) -> ThresholdChoice:
    k = int(np.searchsorted(-c.thresholds, -threshold, side="right"))  # runs >= threshold
    flagged = int(c.flagged[k - 1]) if k else 0
    hits = int(c.hits[k - 1]) if k else 0
    return ThresholdChoice(
        threshold=min(max(threshold, 0.0), 1.0),
        met=met,
        precision=hits / flagged if flagged else None,
        recall=hits / c.positives if c.positives else None,
        alert_rate=flagged / c.n if c.n else 0.0,
    )
