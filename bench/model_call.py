"""The model call alone, per batch and per event: the loaded runtime's ``predict`` (with
its fast paths: worker/model/runtimes/forest.py, lightgbm_fast.py) against the
estimator's own ``predict_proba`` on the same rows, one thread, no Kafka. What bounds a
kind's draining rate (batches of 1,000) and its share of a small batch's latency.

    python bench/model_call.py rf200 hgb lgbm xgb [--sizes 20,1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models as bench_models  # bench/models.py
import numpy as np

from worker.model.bundle import load_bundle


def per_call(f: Callable[[Any], Any], rows: Any, reps: int) -> float:
    f(rows)
    start = time.perf_counter()
    for _ in range(reps):
        f(rows)
    return (time.perf_counter() - start) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("kinds", nargs="+", choices=[k for k in bench_models.KINDS if k != "ct"])
    ap.add_argument("--sizes", default="20,1000")
    a = ap.parse_args()
    x = bench_models.frame(np.random.default_rng(5), 5_000)[0][list(bench_models.NUMBERS)]
    matrix = x.to_numpy()
    print(f"load {os.getloadavg()[0]:.1f}")
    for kind in a.kinds:
        folder = bench_models.build(kind, Path(tempfile.mkdtemp()) / kind)
        runtime = load_bundle(folder, allow_pickle=True, threads=1).runtime
        for n in (int(s) for s in a.sizes.split(",")):
            rows = matrix[:n].copy()
            reps = max(10, 4_000 // n)
            ours = per_call(runtime.predict, rows, reps)
            own = per_call(runtime.model.predict_proba, rows, reps)
            print(f"{kind:6} batch {n:5}: runtime {ours * 1e3:7.3f} ms ({ours / n * 1e6:6.2f} "
                  f"us/event), predict_proba {own * 1e3:7.3f} ms ({own / n * 1e6:6.2f} us/event)",
                  flush=True)


if __name__ == "__main__":
    main()
