"""Worker benchmark: steady throughput on a backlog, then end-to-end latency at a fixed rate.

    python bench/worker_bench.py --model lr30 --events 300000
    python bench/worker_bench.py --model demo
    python bench/worker_bench.py --model ct            # DataFrame pipeline with 2 string columns
    python bench/worker_bench.py --model rf200 --runtime onnx   # or hgb; sklearn or onnx

One real worker process (validation on: a JSON Schema for every event) reads
a 4-partition topic on the local broker. Phase 1 pre-loads ``--events`` events
and times how fast the worker drains them (middle 80 % of the predictions'
broker timestamps, so start-up and the tail do not count). Phase 2 sends
``--rate`` events/s for ``--seconds`` and reports p50/p99 of prediction
timestamp minus the event's own send time. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import models as bench_models  # bench/models.py: the script's own folder is on sys.path
import numpy as np
import orjson
from confluent_kafka import Producer

from worker import kafka_io
from worker.devtools.demo import (
    LR30_FEATURES,
    make_events,
    make_lr30_bundle,
    make_lr30_events,
    train_demo,
)
from worker.devtools.demo_run import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def bundle_and_schema(kind: str, tmp: Path, runtime: str = "sklearn") -> tuple[Path, Path]:
    if kind in bench_models.KINDS:
        path = tmp / f"{kind}.schema.json"
        path.write_text(json.dumps(bench_models.schema(kind)))
        return bench_models.build(kind, tmp / "model", runtime), path
    if kind == "demo":
        return train_demo(tmp / "model", n=50_000), ROOT / "schemas" / "transaction.schema.json"
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "required": ["id", *LR30_FEATURES],
              "properties": {"id": {"type": "string", "minLength": 1}, "ts": {"type": "integer"},
                             **{f: {"type": "number"} for f in LR30_FEATURES}}}  # fmt: skip
    path = tmp / "lr30.schema.json"
    path.write_text(json.dumps(schema))
    return make_lr30_bundle(tmp / "model"), path


def shadow_bundle(kind: str, tmp: Path) -> Path:
    """A second version of the same kind of model, as a shadow candidate."""
    if kind == "demo":
        return train_demo(tmp / "shadow", seed=8, n=50_000, version="2")
    return make_lr30_bundle(tmp / "shadow", seed=12)


def events(kind: str, rng: np.random.Generator, n: int, start: int) -> list[dict[str, Any]]:
    if kind in bench_models.KINDS:
        return bench_models.events(kind, rng, n, start)
    if kind == "demo":
        return make_events(rng, n, start, 0)[0]
    return make_lr30_events(rng, n, start)


def send(p: Producer, topic: str, batch: list[dict[str, Any]], stamp: bool) -> None:
    for e in batch:
        if stamp:
            e["ts"] = time.time_ns() // 1_000_000
        while True:
            try:
                p.produce(topic, orjson.dumps(e), e["id"].encode())
                break
            except BufferError:
                p.poll(0.01)
    p.poll(0)


def steady_rate(stamps: np.ndarray) -> float:
    s = np.sort(stamps)
    lo, hi = int(len(s) * 0.1), int(len(s) * 0.9)
    return (hi - lo) / max((s[hi] - s[lo]) / 1000, 1e-3)


def event_number(key: bytes | None) -> int:
    """Event ids (and keys) end in their sequence number: tx-17, lr30-17."""
    return int((key or b"-1").decode().rsplit("-", 1)[-1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--model", choices=["demo", "lr30", *bench_models.KINDS], default="lr30")
    ap.add_argument("--runtime", choices=["sklearn", "onnx"], default="sklearn",
                    help="model runtime of the bundle (ct, rf200, hgb)")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-max", type=int, default=2000)
    ap.add_argument("--shadow", action="store_true",
                    help="also score every batch with a second model version (shadow)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    model, schema = bundle_and_schema(args.model, tmp, args.runtime)
    run = uuid.uuid4().hex[:6]
    t_in, t_out, t_dlq = f"bench-{run}-in", f"bench-{run}-out", f"bench-{run}-dlq"
    kafka_io.create_topics(args.bootstrap, {t_in: 4, t_out: 4, t_dlq: 1})
    p = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    for start in range(0, args.events, 50_000):
        send(p, t_in, events(args.model, rng, min(50_000, args.events - start), start), False)
    p.flush(120)
    port = free_port()
    cmd = [sys.executable, "-m", "worker", "run", "--bootstrap", args.bootstrap,
           "--input-topic", t_in, "--output-topic", t_out, "--dlq-topic", t_dlq,
           "--group", f"bench-{run}", "--model", str(model), "--schema", str(schema),
           "--batch-max", str(args.batch_max), "--metrics-port", str(port),
           "--log-level", "WARNING"]  # fmt: skip
    if args.shadow:
        shadow = shadow_bundle(args.model, tmp)
        kafka_io.create_topics(args.bootstrap, {f"{t_out}-shadow": 4})
        cmd += ["--shadow-model", str(shadow), "--shadow-topic", f"{t_out}-shadow"]
    worker = subprocess.Popen(cmd)
    wait_ready(port, worker, 60)
    backlog = kafka_io.drain(args.bootstrap, t_out, args.events, 300, idle_s=5)
    throughput = steady_rate(np.array([r.timestamp_ms for r in backlog], dtype=np.float64))
    n_live = int(args.rate * args.seconds)
    t0 = time.monotonic()
    for k in range(0, n_live, max(1, int(args.rate / 20))):
        tick = events(args.model, rng, min(int(args.rate / 20), n_live - k), args.events + k)
        send(p, t_in, tick, True)
        time.sleep(max(0.0, t0 + (k + args.rate / 20) / args.rate - time.monotonic()))
    p.flush(60)
    everything = kafka_io.drain(args.bootstrap, t_out, args.events + n_live, 120, idle_s=5)
    live = [r for r in everything if event_number(r.key) >= args.events]
    lat = np.array([r.timestamp_ms - orjson.loads(r.value or b"{}")["event_ts"] for r in live])
    peak = rss_mib(worker.pid)
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(60)
    kafka_io.delete_topics(args.bootstrap, [t_in, t_out, t_dlq])
    print(orjson.dumps({
        "model": args.model, "runtime": args.runtime, "events": args.events,
        "predictions": len(backlog),
        "steady_events_per_s": round(throughput), "live_rate": args.rate,
        "live_predictions": len(live),
        "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "worker_peak_rss_mib": round(peak, 1), "worker_exit": code, "batch_max": args.batch_max,
        "shadow": args.shadow,
        "machine": f"{platform.machine()} cores={len(os.sched_getaffinity(0))}",
        "python": platform.python_version(),
    }).decode())  # fmt: skip


if __name__ == "__main__":
    main()
