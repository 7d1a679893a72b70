"""Random predictions and labels for the monitor tests (numpy RNG, reproducible)."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.model.calibration import Calibration, fit_calibration
from worker.model.manifest import ReferenceHistogram
from worker.monitor.views import ModelSpec, Outcome, PredictionView

T0 = 1_700_000_000_000
REFERENCE = ReferenceHistogram.from_scores(np.random.default_rng(99).beta(0.5, 20.0, 5000))


def binary_scores(rng: np.random.Generator, n: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Mostly fraud-like tiny scores, some spread ones, and exact 0.0 and 1.0."""
    kind = rng.random(n)
    scores = np.where(kind < 0.7, rng.beta(0.5, 60.0, n), rng.random(n))
    scores[kind > 0.97] = 0.0
    scores[kind > 0.985] = 1.0
    return scores


def binary_truth(
    rng: np.random.Generator, scores: np.ndarray[Any, np.dtype[np.float64]]
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """True labels that follow the score loosely, so AUC is neither 0.5 nor 1."""
    p = np.clip(scores * 0.8 + 0.02, 0.0, 1.0)
    return (rng.random(len(scores)) < p).astype(np.int64)


def prediction(
    i: int, score: float | dict[str, float], label: Any, *, t: int | None = None,
    model: str = "fraud", version: str = "1", event_ts: int | None = None,
    true_label: Any = None,
) -> PredictionView:
    scored_at = T0 + i * 1000 if t is None else t
    return PredictionView(f"e{i}", score, label, model, version, scored_at,
                          event_ts, true_label)


def binary_outcomes(
    rng: np.random.Generator, n: int, *, threshold: float = 0.3, span_ms: int = 3_600_000
) -> list[Outcome]:
    scores = binary_scores(rng, n)
    truth = binary_truth(rng, scores)
    times = T0 + rng.integers(0, span_ms, n)
    return [
        Outcome(prediction(i, float(s), int(s >= threshold), event_ts=int(t)), int(y),
                int(t) + 5000, int(t) + 5000)
        for i, (s, y, t) in enumerate(zip(scores, truth, times, strict=True))
    ]


def _calibration() -> Calibration:
    rng = np.random.default_rng(98)
    scores = binary_scores(rng, 20_000)
    return fit_calibration(scores, binary_truth(rng, scores), threshold=0.3)


CALIBRATION = _calibration()
BINARY = ModelSpec("binary", 1, (0, 1), REFERENCE, CALIBRATION)
BINARY_NO_REF = ModelSpec("binary", 1, (0, 1))
MULTICLASS = ModelSpec("multiclass", classes=("low", "mid", "high"))
REGRESSION = ModelSpec(
    "regression",
    reference=ReferenceHistogram.from_scores(np.random.default_rng(5).normal(0, 1, 2000),
                                             bins=10, value_range=(-3.0, 3.0)),
)
