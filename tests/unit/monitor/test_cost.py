"""Cost per event of the per-event reference (join + window aggregation), in the test log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.unit.monitor.gen import BINARY, T0, binary_scores, binary_truth, prediction
from tests.unit.monitor.reference_join import (
    JoinStats,
    JoinStep,
    Pending,
    add_step,
    on_label,
    on_prediction,
    step_deltas,
)
from worker.monitor.aggregate import WindowAgg
from worker.monitor.views import LabelView, PredictionView
from worker.monitor.windows import WindowKey

N = 4000
BATCH = 500


def messages() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = np.random.default_rng(0)
    scores = binary_scores(rng, N)
    truth = binary_truth(rng, scores)
    predictions = [prediction(i, float(s), int(s >= 0.3), t=T0 + 50 * i,
                              event_ts=T0 + 50 * i - 9).to_dict()
                   for i, s in enumerate(scores)]
    labels = [{"id": f"e{i}", "label": int(y)} for i, y in enumerate(truth)]
    return predictions, labels


def join(predictions: list[dict[str, Any]], labels: list[dict[str, Any]]) -> list[JoinStep]:
    """Parse and join every message, labels a minute after their predictions."""
    store: dict[str, Pending | None] = {}
    steps = []
    for m in predictions:
        pred = PredictionView.from_message(m)
        step = on_prediction(store.get(pred.id), pred, pred.scored_at)
        store[pred.id] = step.pending
        steps.append(step)
    for i, m in enumerate(labels):
        now = T0 + 50 * i + 60_000
        step = on_label(store.get(m["id"]), LabelView.from_message(m, now), now)
        store[m["id"]] = step.pending
        steps.append(step)
    return steps


def aggregate(steps: list[JoinStep]) -> dict[WindowKey, WindowAgg]:
    """Fold the steps batch by batch into per-window tables, as a stream processor would."""
    tables: dict[WindowKey, WindowAgg] = {}
    stats = JoinStats()
    for i in range(0, len(steps), BATCH):
        batch = steps[i : i + BATCH]
        for key, delta in step_deltas(batch, ("5m", "1h"), lambda p: BINARY).items():
            tables[key] = tables.get(key, WindowAgg()).merge(delta)
        for step in batch:
            stats = add_step(stats, step)
    assert stats.counts["joined"] == N
    return tables


def test_join_and_aggregate_cost_per_event(report: Callable[[str], None]) -> None:
    predictions, labels = messages()
    join_us, agg_us = [], []
    for _ in range(3):  # best of three: the machine may be busy
        t0 = time.perf_counter()
        steps = join(predictions, labels)
        t1 = time.perf_counter()
        tables = aggregate(steps)
        t2 = time.perf_counter()
        join_us.append((t1 - t0) / N * 1e6)
        agg_us.append((t2 - t1) / N * 1e6)
    assert sum(int(a.counts.get("count", 0)) for a in tables.values()) == 2 * N
    report(f"monitor core per event (prediction + label, windows 5m and 1h, batches of {BATCH}):"
           f" join {min(join_us):.1f} us, aggregate + stats {min(agg_us):.1f} us")
