"""Conveniences of the public API (worker/__init__.py) on top of the scoring core."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from worker.clock import wall_ms
from worker.core.pipeline import Outcome, ScoringContext, score_values
from worker.model.bundle import ModelBundle


def score_records(
    bundle: ModelBundle | ScoringContext,
    records: Iterable[Mapping[str, Any]],
    now_ms: int | None = None,
) -> list[Outcome]:
    """Score events given as dicts: one ``Prediction`` or ``Rejection`` per record, in order.

    The records take the stream's path (encoded as its JSON message values, then decoded,
    validated, turned into features and scored with one model call), so they are judged
    exactly as on Kafka. ``now_ms`` (the predictions' ``scored_at``) defaults to the clock.
    """
    ctx = bundle if isinstance(bundle, ScoringContext) else ScoringContext(bundle)
    values = [orjson.dumps(record) for record in records]
    return score_values(values, ctx, wall_ms() if now_ms is None else now_ms)
