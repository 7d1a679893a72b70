"""The cost of estimated figures in the monitor's core, no Kafka: the same batch of
predictions and outcomes through ``deltas.batch_deltas`` with the demo model's bundle
stripped of its calibration map (the baseline) and with it.

    flock /tmp/heavy.lock python bench/monitor_estimates.py --events 200000

Trains the demo model, scores ``--events`` demo transactions with it (one hour of event
time, labels one minute later), then times ``batch_deltas`` for one window size (best of
``--repeat``) and reports microseconds per event (a first sighting and its outcome), the
size of the resulting window aggregates (what the global changelog stores per window) and
their histogram entries. Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from worker.devtools.demo import sample_transactions, train_demo
from worker.model.bundle import load_bundle
from worker.monitor.deltas import batch_deltas
from worker.monitor.views import ModelSpec

HOUR_MS = 3_600_000


def run(spec: ModelSpec, preds: list[Any], joined: list[Any], window: str,
        repeat: int) -> dict[str, Any]:
    best = float("inf")
    out = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = batch_deltas([window], lambda _k, _p: spec, preds, joined)
        best = min(best, time.perf_counter() - t0)
    aggs = list(out.values())
    return {"us_per_event": round(best / len(preds) * 1e6, 2),
            "aggregate_kib": round(sum(len(orjson.dumps(a.to_dict())) for a in aggs)
                                   / len(aggs) / 1024, 1),
            "hist_entries": round(sum(sum(len(h) for h in a.hists.values()) for a in aggs)
                                  / len(aggs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--window", default="1h")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(train_demo(Path(tmp) / "model", n=50_000))
    rng = np.random.default_rng(3)
    x, y = sample_transactions(rng, args.events)
    scores = bundle.estimator.predict_proba(x)[:, 1].tolist()
    start = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    times = (start + np.sort(rng.integers(0, HOUR_MS, args.events))).tolist()
    m, v, thr = bundle.manifest.name, bundle.manifest.version, bundle.manifest.threshold
    preds = [(m, v, s, int(s >= thr), t) for s, t in zip(scores, times, strict=True)]
    joined = [(p, int(t), p[4] + 60_000, p[4] + 60_000, False)
              for p, t in zip(preds, y.tolist(), strict=True)]
    with_map = ModelSpec.from_manifest(bundle.manifest)
    assert with_map.calibration is not None
    for name, spec in (("baseline (no calibration map)", replace(with_map, calibration=None)),
                       ("estimates (calibration map)", with_map)):
        print(orjson.dumps({"variant": name, "events": args.events, "window": args.window,
                            **run(spec, preds, joined, args.window, args.repeat)}).decode())


if __name__ == "__main__":
    main()
