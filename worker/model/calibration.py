"""The bundle's calibration map: the model's score -> the observed outcome rate.

A monotone step function fitted on labeled holdout rows (the *reference*): the scores
are cut into quantile bins of at least ``min_rows`` rows each (the decision threshold
is always a cut, so every step lies wholly on one side of it), each bin's outcome rate
is computed, and the rates are made non-decreasing by pooling adjacent violators
(isotonic regression over the bins, weighted by their rows). It is stored in the
manifest as a small table with the reference's size.

Each rate is rounded to a multiple of ``RATE_UNIT`` (2**-20, about 1e-6): the
monitor adds calibrated rates as exact sums and keys histograms by a rate's units,
so that estimated figures stay exact and mergeable (worker/monitor/estimate.py).
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

import numpy as np
import numpy.typing as npt

RATE_BITS: Final = 20
RATE_UNITS: Final = 1 << RATE_BITS
RATE_UNIT: Final = 1.0 / RATE_UNITS
MIN_ROWS_PER_BIN: Final = 200
MAX_BINS: Final = 50
MIN_REFERENCE_ROWS: Final = 2 * MIN_ROWS_PER_BIN
#: A reference ROC AUC or accuracy this high means the rows were most likely seen in
#: training: a calibration fitted on them is over-confident.
IMPLAUSIBLE: Final = 0.999
#: A reference figure this far above the bundle's holdout metric means the same.
IMPLAUSIBLE_MARGIN: Final = 0.03
FloatArray = npt.NDArray[np.float64]


class CalibrationError(ValueError):
    """A calibration table that cannot be used; the message is one short line."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """Steps of the map: step ``k`` covers scores in ``[cuts[k-1], cuts[k])`` (the first
    from -inf, the last to +inf); ``rates[k]`` (non-decreasing, multiples of RATE_UNIT)
    is its outcome rate, ``rows[k]`` and ``positives[k]`` what the reference had there."""

    cuts: tuple[float, ...]
    rates: tuple[float, ...]
    rows: tuple[int, ...]
    positives: tuple[int, ...]
    method: str = "binned-isotonic"

    @property
    def size(self) -> int:
        """Rows of the reference the map was fitted on."""
        return sum(self.rows)

    def step(self, score: float) -> int:
        return bisect_right(self.cuts, score)

    def rate(self, score: float) -> float:
        return self.rates[self.step(score)]

    def units(self, score: float) -> int:
        """The calibrated rate of ``score`` in RATE_UNITs (an exact integer)."""
        return round(self.rate(score) * RATE_UNITS)

    def units_of(self, scores: FloatArray) -> npt.NDArray[np.int64]:
        """``units`` of many scores (numpy's searchsorted 'right' is bisect_right)."""
        units = np.round(np.asarray(self.rates) * RATE_UNITS).astype(np.int64)
        return units[np.searchsorted(np.asarray(self.cuts), scores, side="right")]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "size": self.size, "cuts": list(self.cuts),
                "rates": list(self.rates), "rows": list(self.rows),
                "positives": list(self.positives)}

    @classmethod
    def parse(cls, data: object) -> Calibration:
        if not isinstance(data, dict):
            raise CalibrationError("'calibration' must be an object with cuts, rates, rows")
        cuts = _list(data, "cuts", float)
        rates = _list(data, "rates", float)
        rows = _list(data, "rows", int)
        positives = _list(data, "positives", int)
        if not len(rates) == len(rows) == len(positives) == len(cuts) + 1:
            raise CalibrationError("calibration needs len(rates) == len(rows) == "
                                   "len(positives) == len(cuts) + 1")
        if any(b <= a for a, b in pairwise(cuts)):
            raise CalibrationError("calibration.cuts must be strictly increasing")
        if any(not 0.0 <= r <= 1.0 or r * RATE_UNITS != round(r * RATE_UNITS) for r in rates):
            raise CalibrationError("calibration.rates must be in [0, 1], multiples of 2**-20")
        if any(b < a for a, b in pairwise(rates)):
            raise CalibrationError("calibration.rates must not decrease")
        if any(n < 1 or not 0 <= p <= n for n, p in zip(rows, positives, strict=True)):
            raise CalibrationError("calibration.rows must be >= 1, positives in [0, rows]")
        size = data.get("size")
        if size is not None and size != sum(rows):
            raise CalibrationError("calibration.size must equal the sum of its rows")
        method = data.get("method", "binned-isotonic")
        if not isinstance(method, str):
            raise CalibrationError("calibration.method must be a string")
        return cls(tuple(cuts), tuple(rates), tuple(rows), tuple(positives), method)


def _list(data: dict[str, Any], key: str, kind: type) -> list[Any]:
    value = data.get(key)
    ok = isinstance(value, list) and all(
        type(v) is int if kind is int else type(v) in (int, float) and math.isfinite(v)
        for v in value)
    if not ok:
        raise CalibrationError(f"calibration.{key} must be a list of {kind.__name__}s")
    return [kind(v) for v in value]  # type: ignore[union-attr]


def fit_calibration(
    scores: npt.ArrayLike,
    outcomes: npt.ArrayLike,
    threshold: float,
    *,
    min_rows: int = MIN_ROWS_PER_BIN,
    max_bins: int = MAX_BINS,
) -> Calibration:
    """The binned isotonic map of ``scores`` (positive-class scores) to ``outcomes``
    (1 for the positive class, else 0), with ``threshold`` among its cuts."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(outcomes).astype(bool)
    if s.ndim != 1 or s.shape != y.shape:
        raise CalibrationError("calibration needs one score and one outcome per row")
    if not np.isfinite(s).all():
        raise CalibrationError("calibration scores must be finite")
    if len(s) < 2 * min_rows:
        raise CalibrationError(f"calibration needs at least {2 * min_rows} labeled reference "
                               f"rows, got {len(s)}")
    cuts = _cuts(s, threshold, min_rows, max_bins)
    step = np.searchsorted(cuts, s, side="right")
    rows = np.bincount(step, minlength=len(cuts) + 1)
    positives = np.bincount(step, weights=y, minlength=len(cuts) + 1).astype(np.int64)
    rates = pool_adjacent_violators(positives / rows, rows)
    quantized = [round(r * RATE_UNITS) / RATE_UNITS for r in rates]
    return Calibration(tuple(float(c) for c in cuts), tuple(quantized),
                       tuple(int(n) for n in rows), tuple(int(p) for p in positives))


def _cuts(s: FloatArray, threshold: float, min_rows: int, max_bins: int) -> FloatArray:
    """Quantile cuts with at least ``min_rows`` rows on each side of each one, on each
    side of the threshold separately (the threshold is a cut when rows lie on both sides)."""
    below, above = s[s < threshold], s[s >= threshold]
    parts = [x for x in (below, above) if len(x)]
    share = max(1, max_bins // len(parts))
    cuts: list[float] = []
    for k, part in enumerate(parts):
        if k == 1:
            cuts.append(float(threshold))
        bins = max(1, min(share, len(part) // min_rows))
        inner = np.unique(np.quantile(part, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        cuts.extend(_thin(part, inner, min_rows))
    return np.asarray(sorted(set(cuts)), dtype=np.float64)


def _thin(part: FloatArray, inner: FloatArray, min_rows: int) -> list[float]:
    """Drop cuts that would leave fewer than ``min_rows`` rows in a bin (heavy ties)."""
    kept: list[float] = []
    last = -math.inf
    ordered = np.sort(part)
    for c in inner.tolist():
        n_between = int(np.searchsorted(ordered, c) - np.searchsorted(ordered, last))
        n_after = len(ordered) - int(np.searchsorted(ordered, c))
        if n_between >= min_rows and n_after >= min_rows:
            kept.append(c)
            last = c
    return kept


def pool_adjacent_violators(values: npt.ArrayLike, weights: npt.ArrayLike) -> list[float]:
    """The weighted least-squares non-decreasing fit of ``values`` (isotonic regression)."""
    blocks: list[list[float]] = []  # [weighted mean, weight, members]
    for v, w in zip(np.asarray(values, dtype=np.float64).tolist(),
                    np.asarray(weights, dtype=np.float64).tolist(), strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks[-1]
            blocks[-1] = [(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2]
    return [b[0] for b in blocks for _ in range(int(b[2]))]


def check_not_training_rows(scores: FloatArray, outcomes: npt.NDArray[Any], threshold: float,
                            holdout: dict[str, float]) -> str | None:
    """A warning when the reference rows look like training rows: a ROC AUC or accuracy
    implausibly high, or well above the bundle's own holdout metrics."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(outcomes).astype(bool)
    figures = {"accuracy": float(np.mean((scores >= threshold) == y))}
    if 0 < y.sum() < len(y):
        figures["roc_auc"] = float(roc_auc_score(y, scores))
    for name, value in figures.items():
        if (name == "roc_auc" and value >= IMPLAUSIBLE) or (name == "accuracy" and value == 1.0):
            return (f"the calibration reference looks like training rows: its {name} is "
                    f"{value:.4f}; fit the calibration on a holdout, or estimates will be "
                    "over-confident")
        known = holdout.get(name)
        if known is not None and value > known + IMPLAUSIBLE_MARGIN:
            return (f"the calibration reference looks like training rows: its {name} "
                    f"{value:.4f} is above the bundle's holdout {name} {known:.4f}; fit the "
                    "calibration on a holdout, or estimates will be over-confident")
    return None


def warn_if_training_rows(scores: FloatArray, outcomes: npt.NDArray[Any], threshold: float,
                          holdout: dict[str, float]) -> None:
    message = check_not_training_rows(scores, outcomes, threshold, holdout)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=3)


def calibrate_reference(
    estimator: Any,
    reference: Any,
    labels: Any,
    *,
    features: Sequence[str],
    classes: Sequence[Any],
    threshold: float,
    holdout: dict[str, float],
    as_frame: bool,
) -> Calibration:
    """The map fitted on ``reference`` (input rows: a DataFrame with the features by name,
    or an array in the manifest's feature order) and ``labels`` (true classes), scored by
    the estimator itself; warns when the rows look like training rows."""
    rows = _rows(reference, features, as_frame)
    truth = np.asarray(labels)
    if truth.ndim != 1 or len(truth) != len(rows):
        raise CalibrationError(f"reference_labels must have one label per reference row "
                               f"({len(rows)}), got shape {truth.shape}")
    known = {c.item() if hasattr(c, "item") else c for c in classes}
    unknown = {v for v in truth.tolist() if v not in known}
    if unknown:
        shown = sorted(unknown, key=str)[:5]
        raise CalibrationError(f"reference_labels has labels that are not classes "
                               f"{sorted(known, key=str)}: {shown}")
    scores = np.asarray(estimator.predict_proba(rows), dtype=np.float64)[:, 1]
    outcomes = truth == classes[1]
    warn_if_training_rows(scores, outcomes, threshold, holdout)
    return fit_calibration(scores, outcomes, threshold)


def _rows(reference: Any, features: Sequence[str], as_frame: bool) -> Any:
    if hasattr(reference, "columns"):
        missing = [f for f in features if f not in reference.columns]
        if missing:
            raise CalibrationError(f"reference has no column {missing[0]!r}")
        frame = reference[list(features)]
        return frame if as_frame else frame.to_numpy(dtype=np.float64)
    matrix = np.asarray(reference)
    if matrix.ndim != 2 or matrix.shape[1] != len(features):
        raise CalibrationError(f"reference must have {len(features)} columns in the "
                               f"manifest's feature order, got shape {matrix.shape}")
    if as_frame:
        import pandas as pd

        return pd.DataFrame(matrix, columns=list(features))
    return matrix
