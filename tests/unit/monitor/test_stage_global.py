"""Stage two's records of the windows it restored: what the status page reads back after a
restart, so that every window that can still change keeps its maturity curve."""

from __future__ import annotations

import numpy as np
import orjson

from tests.unit.monitor.gen import BINARY, T0, binary_outcomes
from tests.unit.monitor.reference_join import window_deltas
from worker.monitor.alerts import DEFAULT_RULES
from worker.monitor.stage_global import GlobalPartition
from worker.monitor.status import MATURITY_SPAN_MS, StatusBoard
from worker.monitor.windows import HOUR_MS

DAY = 24 * HOUR_MS


def test_restored_windows_give_the_page_their_maturity_beyond_the_figures_span() -> None:
    rng = np.random.default_rng(4)
    start = T0 - T0 % DAY
    outcomes = binary_outcomes(rng, 2000, span_ms=5 * DAY)  # six daily windows
    outcomes = [o.__class__(o.prediction, o.true_label, o.label_time + int(d), 0)
                for o, d in zip(outcomes, rng.exponential(DAY, len(outcomes)), strict=True)]
    deltas = window_deltas(("1d",), lambda _p: BINARY, [o.prediction for o in outcomes],
                           outcomes)
    live = GlobalPartition(0, ["1d"], lambda _m, _v: BINARY, DEFAULT_RULES, retain_ms=9 * DAY)
    now = start + 7 * DAY
    items = [("w", {"source": "0", "window": k.kafka_key(), "agg": agg.to_dict()})
             for k, agg in deltas.items()]
    changes, published, _ = live.apply(items, now)
    restored = GlobalPartition(0, ["1d"], lambda _m, _v: BINARY, DEFAULT_RULES,
                               retain_ms=9 * DAY)
    for key, value in changes.items():
        restored.restore(key, value)
    records = restored.closed_records(now, now - MATURITY_SPAN_MS)
    assert len(records) == len(published) == len(deltas) == 6
    fields = ("window_start", "predicted", "coverage", "maturity", "est_recall", "recall")
    for (k1, v1), (k2, v2) in zip(records, published, strict=True):
        a, b = orjson.loads(v1), orjson.loads(v2)
        assert k1 == k2 and {f: a[f] for f in fields} == {f: b[f] for f in fields}
        assert len(a["maturity"]) > 2
    # Only the windows that ended within the span asked for, both ends included.
    assert len(restored.closed_records(start + 3 * DAY, start + DAY)) == 3  # ends 1d, 2d, 3d
    board = StatusBoard(DEFAULT_RULES, ["1d"], "solo")
    board.on_metrics(0, records)
    board.tick(now, [0])
    (model,) = board.status(now)["models"]
    assert model["windows"] == {"1d": []}  # older than the figures' 6 h span
    kept = model["maturity"]["1d"]
    assert [w["window_start"] for w in kept] == sorted(k.start_ms for k in deltas)
