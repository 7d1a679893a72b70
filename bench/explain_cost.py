"""The cost of reason codes in the pure core, no Kafka: events/s of ``score_values`` without
and with ``--explain K``, for each model, in one run (alternating, best of --repeat).

    python bench/explain_cost.py [--k 3] [--batch 500] [--models lr30,demo,ct,hgb,rf200]
    python bench/explain_cost.py --models hgb,lgbm,xgb   # shap's TreeSHAP beside the boosters' own

The worker's own figure (Kafka included) is ``bench/worker_bench.py --explain 3``; this one
isolates what the explainer adds to the scoring core. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import timeit
from pathlib import Path
from typing import Any

import models as bench_models  # bench/models.py: the script's own folder is on sys.path
import numpy as np
import orjson

from worker.core.pipeline import ScoringContext, score_values
from worker.devtools.demo import make_events, make_lr30_bundle, make_lr30_events, train_demo
from worker.model.bundle import load_bundle


def bundle_and_events(kind: str, folder: Path, n: int) -> tuple[Any, list[bytes]]:
    rng = np.random.default_rng(3)
    if kind == "lr30":
        path, events = make_lr30_bundle(folder / kind), make_lr30_events(rng, n, 0)
    elif kind == "demo":
        path, events = train_demo(folder / kind, n=200_000), make_events(rng, n, 0, 1)[0]
    else:
        path, events = bench_models.build(kind, folder / kind), bench_models.events(kind, rng, n, 0)
    pickled = kind in bench_models.PICKLED  # lgbm, xgb: joblib bundles
    return load_bundle(path, allow_pickle=pickled), [orjson.dumps(e) for e in events]


def events_per_s(ctx: ScoringContext, values: list[bytes], repeat: int) -> float:
    number = 3 if ctx.explain == 0 or len(values) < 200 else 1
    best = min(timeit.repeat(lambda: score_values(values, ctx, 1), setup=gc.enable,
                             number=number, repeat=repeat))
    return len(values) * number / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default="lr30,demo,ct,hgb,rf200")
    a = ap.parse_args()
    out: dict[str, Any] = {"k": a.k, "batch": a.batch, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.models.split(","):
            bundle, values = bundle_and_events(kind, Path(tmp), a.batch)
            # rf200's TreeSHAP takes seconds a batch: a smaller batch keeps the run short.
            explained = values[:50] if kind == "rf200" else values
            plain, reasons = ScoringContext(bundle), ScoringContext(bundle, explain=a.k)
            score_values(values[:10], reasons, 1)  # shap compiles on its first call
            without = with_reasons = 0.0
            for _ in range(2):  # alternating, so that a change of load hits both
                without = max(without, events_per_s(plain, values, a.repeat))
                with_reasons = max(with_reasons, events_per_s(reasons, explained, a.repeat))
            out["models"][kind] = {"without": round(without), "with": round(with_reasons),
                                   "ratio": round(with_reasons / without, 3),
                                   "output": str(reasons.explainer.output)
                                   if reasons.explainer else None}
    print(orjson.dumps(out).decode())


if __name__ == "__main__":
    main()
