"""Pure hot path, no Kafka: microseconds per event of each stage and of score_values.

Trains the demo model, the 30-feature LogisticRegression and the ``ct`` DataFrame
pipeline (bench/models.py: one-hot on 2 string columns, 10 numbers, LogisticRegression)
into a temporary folder, then times with the GC on (best of several repeats, batches
of --batch events):
schema validation of demo events, feature extraction, and the whole
``score_values`` (decode, extract, one model call, serialise). Prints one JSON
line per figure.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models as bench_models  # bench/models.py: the script's own folder is on sys.path
import numpy as np
import orjson

from worker.core.features import extract
from worker.core.pipeline import ScoringContext, score_values
from worker.core.schema import EventValidator, load_schema_json
from worker.devtools.demo import make_events, make_lr30_bundle, make_lr30_events, train_demo
from worker.model.bundle import load_bundle
from worker.stream.alloc import keep_freed_memory

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "transaction.schema.json"


def per_event_us(fn: Callable[[], object], events: int, number: int, repeat: int) -> float:
    # timeit switches the GC off by default; the worker runs with it on.
    times = timeit.repeat(fn, setup=gc.enable, number=number, repeat=repeat)
    return min(times) / number / events * 1e6


def figures(batch: int, number: int, repeat: int, folder: Path) -> list[dict[str, Any]]:
    demo = load_bundle(train_demo(folder / "demo", n=200_000))
    lr30 = load_bundle(make_lr30_bundle(folder / "lr30"))
    ct = load_bundle(bench_models.build("ct", folder / "ct"))
    ct_ctx = ScoringContext(ct)
    rng = np.random.default_rng(1)
    demo_events, _ = make_events(rng, batch, 0, 1_700_000_000_000)
    lr30_events = make_lr30_events(rng, batch, 0)
    demo_values: list[bytes | None] = [orjson.dumps(e) for e in demo_events]
    lr30_values: list[bytes | None] = [orjson.dumps(e) for e in lr30_events]
    ct_events: list[object] = list(bench_models.events("ct", rng, batch, 0))
    ct_values: list[bytes | None] = [orjson.dumps(e) for e in ct_events]
    fast = EventValidator.from_file(SCHEMA)
    slow = EventValidator(load_schema_json(SCHEMA), prefer_fast=False)

    def time_it(name: str, fn: Callable[[], object]) -> dict[str, Any]:
        return {"figure": name, "us_per_event": round(per_event_us(fn, batch, number, repeat), 2)}

    return [
        time_it("validate transaction (fastjsonschema)",
                lambda: [fast.validate(e) for e in demo_events]),
        time_it("validate transaction (jsonschema, reference)",
                lambda: [slow.validate(e) for e in demo_events]),
        time_it("extract 9 demo features", lambda: extract(demo_events, demo.features)),
        time_it("extract 30 features", lambda: extract(lr30_events, lr30.features)),
        time_it("score_values demo model",
                lambda: score_values(demo_values, ScoringContext(demo), 1)),
        time_it("score_values demo model + schema",
                lambda: score_values(demo_values, ScoringContext(demo, fast), 1)),
        time_it("score_values lr30", lambda: score_values(lr30_values, ScoringContext(lr30), 1)),
        time_it(f"extract ct features (typed columns -> its runtime's {ct.runtime.input!r})",
                lambda: ct_ctx.extract(ct_events, False)),
        time_it("score_values ct (a pipeline fitted on a DataFrame)",
                lambda: score_values(ct_values, ct_ctx, 1)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=1000, help="events per batch")
    ap.add_argument("--number", type=int, default=20, help="batches per timing")
    ap.add_argument("--repeat", type=int, default=7, help="timings; the best one counts")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="raise glibc's trim threshold first (worker.stream.alloc)")
    args = ap.parse_args()
    tuned = keep_freed_memory() if args.keep_freed_memory else False
    with tempfile.TemporaryDirectory() as tmp:
        for figure in figures(args.batch, args.number, args.repeat, Path(tmp)):
            figure.update(batch=args.batch, keep_freed_memory=tuned)
            print(orjson.dumps(figure).decode())


if __name__ == "__main__":
    main()
