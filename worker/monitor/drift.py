"""Per-feature drift and data-quality figures from exact counts (worker/core/
feature_counts.py) against the bundle's reference profile (worker/model/profile.py).

- ``psi``: population stability index, sum of (a_i - e_i) * ln(a_i / e_i) over the bins,
  a and e the window's and the reference's proportions of present values; a proportion
  of 0 on either side is taken as PSI_EPSILON (1e-4), as for the score PSI.
- ``js_distance``: Jensen-Shannon distance, the square root of the Jensen-Shannon
  divergence in bits (base 2), so it lies in [0, 1]: 0 for equal distributions, 1 for
  disjoint ones. Empty bins need no epsilon.
- ``missing_rate``: missing / count; ``missing_rate_delta``: that minus the reference's
  missing rate (what the default data-quality rule watches); ``out_of_range_rate``
  (numeric): present values below the reference minimum or above its maximum, over
  count; ``unseen_rate`` (categorical, complete reference only): present values the
  reference never had, over count. ``count``: every value looked at, missing included.

Bins are the reference's: numeric quantile bins (open at both ends), or the top values
and one "other". A figure without data (no present value, an empty reference) is None.
Pure: plain numbers in, plain numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from worker.model.profile import FeatureProfile

PSI_EPSILON: Final = 1e-4
Counts = Sequence[int] | npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FeatureFigureDef:
    """One per-feature figure: its field in FeatureFigures, its gauge (labels model,
    model_version, window, feature) and the gauge's help."""

    name: str
    gauge: str
    help: str


FEATURE_FIGURES: Final = (
    FeatureFigureDef("psi", "scoring_feature_psi",
                     "Population stability index of the feature against the reference."),
    FeatureFigureDef("js", "scoring_feature_js_distance",
                     "Jensen-Shannon distance (base 2, in [0, 1]) against the reference."),
    FeatureFigureDef("missing_rate", "scoring_feature_missing_ratio",
                     "Share of events with the feature missing."),
    FeatureFigureDef("missing_rate_delta", "scoring_feature_missing_ratio_delta",
                     "Missing share minus the reference's missing share."),
    FeatureFigureDef("out_of_range_rate", "scoring_feature_out_of_range_ratio",
                     "Share of events with the feature outside the reference's [min, max]."),
    FeatureFigureDef("unseen_rate", "scoring_feature_unseen_ratio",
                     "Share of events with a category the reference never had."),
    FeatureFigureDef("count", "scoring_feature_values",
                     "Events whose feature was counted in the window (missing included)."),
)
FEATURE_METRICS: Final = tuple(f.name for f in FEATURE_FIGURES if f.name != "count")


def psi(actual: Counts, expected: Counts) -> float | None:
    a, e = _proportions(actual, expected)
    if a is None or e is None:
        return None
    a, e = np.where(a > 0, a, PSI_EPSILON), np.where(e > 0, e, PSI_EPSILON)
    return math.fsum(((a - e) * np.log(a / e)).tolist())


def js_distance(actual: Counts, expected: Counts) -> float | None:
    p, q = _proportions(actual, expected)
    if p is None or q is None:
        return None
    m = (p + q) / 2.0
    divergence = 0.5 * (_kl_bits(p, m) + _kl_bits(q, m))
    return math.sqrt(max(divergence, 0.0))


@dataclass(frozen=True, slots=True)
class FeatureFigures:
    """One feature's figures over one window (None: undefined)."""

    name: str
    count: int
    psi: float | None
    js: float | None
    missing_rate: float | None
    out_of_range_rate: float | None
    unseen_rate: float | None
    missing_rate_delta: float | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {"feature": self.name, "count": self.count, "psi": self.psi, "js": self.js,
                "missing_rate": self.missing_rate,
                "missing_rate_delta": self.missing_rate_delta,
                "out_of_range_rate": self.out_of_range_rate,
                "unseen_rate": self.unseen_rate}


def feature_figures(profile: FeatureProfile, counts: Counts) -> FeatureFigures:
    """``counts``: the feature's slice of a window's vector (feature_counts.py's layout)."""
    c = np.asarray(counts, dtype=np.int64)
    reference = profile.bin_counts()
    bins, tail = c[: len(reference)], c[len(reference) :].tolist()
    if profile.kind == "numeric":
        missing, outside, unseen = tail[0], tail[1] + tail[2], None
    else:
        missing, outside = tail[0], None
        unseen = int(bins[-1]) if profile.complete else None
    count = int(bins.sum()) + missing
    missing_rate, reference_rate = _rate(missing, count), profile.missing_rate
    delta = None if missing_rate is None or reference_rate is None else (
        missing_rate - reference_rate)
    return FeatureFigures(
        profile.name, count, psi(bins, reference), js_distance(bins, reference),
        missing_rate, None if outside is None else _rate(outside, count),
        None if unseen is None else _rate(unseen, count), delta,
    )


def ranked(figures: Sequence[FeatureFigures]) -> list[FeatureFigures]:
    """Most drifted first: by PSI (undefined last), then by name."""
    return sorted(figures, key=lambda f: (f.psi is None, -(f.psi or 0.0), f.name))


def _rate(part: int, count: int) -> float | None:
    return part / count if count else None


def _proportions(
    actual: Counts, expected: Counts
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise ValueError(f"{a.size} bins against a reference of {e.size}")
    n_a, n_e = a.sum(), e.sum()
    return (a / n_a if n_a > 0 else None), (e / n_e if n_e > 0 else None)


def _kl_bits(p: npt.NDArray[np.float64], m: npt.NDArray[np.float64]) -> float:
    """Kullback-Leibler divergence of p from m in bits; 0 * log(0) is 0."""
    used = p > 0
    return math.fsum((p[used] * np.log2(p[used] / m[used])).tolist())
