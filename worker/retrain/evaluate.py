"""A model's figures on the holdout, computed the way the product computes them live.

The holdout's raw events go through ``score_values`` (the worker's decode,
validation, features, model call and decision at the bundle's threshold), each
prediction is joined with its true label, and the figures come from the monitor's
own aggregate and catalog (worker/monitor/aggregate.py, catalog.py). So a figure
in the retrain table is the figure the monitor would publish for a window holding
exactly these events. No I/O, no clock: ``now_ms`` is passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.model.bundle import ModelBundle
from worker.model.manifest import ClassLabel, ReferenceHistogram
from worker.monitor.aggregate import WindowAgg, add_outcomes, add_predictions
from worker.monitor.catalog import metrics
from worker.monitor.figures import Figure, ratio
from worker.monitor.views import ModelSpec, Outcome, PredictionView

#: The rows of the comparison table, in order (catalog names, plus alert_rate).
TABLE_FIGURES = ("count", "positives", "roc_auc", "recall", "precision", "alert_rate",
                 "log_loss", "brier", "psi")


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Figures by name (every catalog metric, plus ``alert_rate``: the share of events
    decided positive) and the positive-class score of each row (NaN: not scored)."""

    figures: dict[str, Figure]
    scores: npt.NDArray[np.float64]
    not_scored: int


def evaluate(
    ctx: ScoringContext,
    bundle: ModelBundle,
    values: Sequence[bytes | None],
    truth: Sequence[ClassLabel],
    times: Sequence[int],
    now_ms: int,
    reference: ReferenceHistogram | None = None,
) -> Evaluation:
    """Score ``values`` with ``bundle`` through ``ctx``'s pipeline and compare with
    ``truth``; PSI is taken against ``reference`` (default: the bundle's own)."""
    scored = score_values(values, dataclasses.replace(ctx, bundle=bundle), now_ms)
    spec = ModelSpec.from_manifest(bundle.manifest)
    if reference is not None:
        spec = dataclasses.replace(spec, reference=reference)
    views: list[PredictionView] = []
    outcomes: list[Outcome] = []
    scores = np.full(len(values), np.nan)
    for k, outcome in enumerate(scored):
        if not isinstance(outcome, Prediction):
            continue
        view = PredictionView.from_message(outcome.record)
        views.append(view)
        outcomes.append(Outcome(view, truth[k], times[k], now_ms))
        scores[k] = positive_score(outcome.record["score"])
    agg = add_predictions(add_outcomes(WindowAgg(), outcomes, spec), views, spec)
    figures = metrics(agg, spec.reference)
    figures["alert_rate"] = alert_rate(agg)
    return Evaluation(figures, scores, len(values) - len(views))


def alert_rate(agg: WindowAgg) -> float | None:
    """Share of labeled events decided positive: what a threshold costs in alerts."""
    c = agg.counts
    return ratio(c.get("tp", 0) + c.get("fp", 0), c.get("count", 0))


def positive_score(score: Any) -> float:
    """The binary score of a prediction record (the probability of classes[1])."""
    return float(score) if isinstance(score, int | float) else float("nan")
