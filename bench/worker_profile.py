"""Where a worker's time goes per event: cProfile of the worker process draining a topic,
grouped into the stages of its path, in microseconds per event.

    python bench/worker_profile.py --model lr30 --events 200000 [--baseline /old/checkout]
    python bench/worker_profile.py --model demo --worker-args "--pass-headers true" --headers
    python bench/worker_profile.py --sampler py-spy --spy-seconds 4 --events 300000  # shares

The events are loaded once; each tree's worker (this one, then each ``--baseline``, run
with this interpreter and the checkout on PYTHONPATH) drains them under cProfile with a
group of its own, and is stopped (SIGTERM) once every output is on its topic. Stages are
the cumulative time of the functions that do them, by name (so an older tree's names
count too); ``other`` is the loop's time outside them. cProfile slows Python calls down
(more so where there are many), so the figures rank the stages; rates come from
bench/worker_bench.py. ``--sampler py-spy`` samples the drain's first seconds instead
(py-spy, in the dev extra; native frames too, so the cyclic collector's passes show) and
gives each stage's share of the loop's samples. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import worker_bench as wb  # bench/worker_bench.py: the script's own folder is on sys.path
from confluent_kafka import Producer

from worker import kafka_io
from worker.devtools.demo_run import free_port, wait_ready

#: Stage -> the functions (file suffix, name) whose cumulative time it is. Nested ones are
#: not counted twice: a stage's functions are picked so that none calls another's.
STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "consume": (("kafka_io/clients.py", "poll_batch"),),
    "decode": (("decoders/json.py", "decode"), ("core/pipeline.py", "_decode")),
    "validate": (("core/pipeline.py", "_validate_all"),),
    "features": (("core/features.py", "extract"), ("core/features.py", "extract_numeric"),
                 ("core/features.py", "_numeric"), ("core/columns.py", "__call__")),
    "predict": (("core/scoring.py", "score_batch_safely"),),
    "build+encode": (("core/scoring.py", "build_predictions"),),
    "outputs": (("stream/outputs.py", "batch_outputs"),),
    # Picking each input's passed headers; putting them on the outputs is in "outputs" since
    # batch_outputs does it (carry and _pass_headers: the code before, for a baseline).
    "headers": (("stream/passthrough.py", "picked"), ("stream/runner.py", "_headers_dropped"),
                ("stream/passthrough.py", "carry"), ("stream/runner.py", "_pass_headers")),
    "produce": (("stream/delivery.py", "send"), ("stream/delivery.py", "_send")),
    "poll+reports": (("kafka_io/producer.py", "poll"),),
    "commit": (("stream/alo.py", "_commit"),),
    "account": (("stream/runner.py", "_account"),),
}


def load(bs: str, model: str, n: int, headers: bool) -> str:
    topic = f"prof-{uuid.uuid4().hex[:8]}-in"
    kafka_io.create_topics(bs, {topic: 4})
    if headers:
        wb.TRACE_HEADERS = []
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000})
    rng = np.random.default_rng(1)
    for start in range(0, n, 50_000):
        wb.send(p, topic, wb.events(model, rng, min(50_000, n - start), start), False)
    p.flush(120)
    return topic


def profile(a: argparse.Namespace, tree: Path | None, t_in: str, model: Path, schema: Path,
            out: Path) -> None:
    t_out = f"prof-{uuid.uuid4().hex[:8]}-out"
    kafka_io.create_topics(a.bootstrap, {t_out: 4, f"{t_out}-dlq": 1})
    port = free_port()
    env = {**os.environ}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    spy = a.sampler == "py-spy"
    profiler = [] if spy else ["-m", "cProfile", "-o", str(out)]
    cmd = [sys.executable, *profiler, "-m", "worker", "run",
           "--bootstrap", a.bootstrap, "--input-topic", t_in, "--output-topic", t_out,
           "--dlq-topic", f"{t_out}-dlq", "--group", f"g-{t_out}", "--model", str(model),
           "--schema", str(schema), "--metrics-port", str(port), "--log-level", "WARNING",
           *a.worker_args.split()]
    proc = subprocess.Popen(cmd, env=env, cwd=tree or wb.ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, proc, 90)
        sampler = None
        if spy:  # samples the drain's first seconds, native frames too (the collector's)
            sampler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--native", "-r", "250",
                 "--format", "raw", "-o", str(out), "-d", str(a.spy_seconds), "--pid",
                 str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kafka_io.drain(a.bootstrap, t_out, a.events, 600, idle_s=5)
        if sampler is not None:
            sampler.wait(60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        kafka_io.delete_topics(a.bootstrap, [t_out, f"{t_out}-dlq"])


def stages(path: Path, events: int) -> dict[str, Any]:
    stats: Any = pstats.Stats(str(path)).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    cum: dict[str, float] = {}
    for stage, funcs in STAGES.items():
        cum[stage] = sum(v[3] for (file, _, name), v in stats.items()
                         if any(file.endswith(f) and name == n for f, n in funcs))
    turn = sum(v[3] for (file, _, name), v in stats.items()
               if file.endswith("stream/runner.py") and name == "turn")
    per = {k: round(v / events * 1e6, 2) for k, v in cum.items()}
    per["other"] = round((turn - sum(cum.values())) / events * 1e6, 2)
    per["loop total"] = round(turn / events * 1e6, 2)
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:25]
    return {"us_per_event": per,
            "top_self_us_per_event": [
                {"function": f"{Path(f).parent.name}/{Path(f).name}:{ln} {name}",
                 "calls_per_event": round(v[1] / events, 2),
                 "us": round(v[2] / events * 1e6, 2)} for (f, ln, name), v in top]}


#: py-spy: stage -> frames (function, a part of its file's path) in the sampled stacks; a
#: sample counts for the first stage listed that it is in (the collector's first: it runs
#: inside whatever allocates).
SPY_STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "cyclic gc": (("gc_collect_main", "libpython"),),
    "consume": (("poll_batch", "clients.py"),),
    "decode": (("decode", "decoders/json.py"),),
    "validate": (("_validate_all", "pipeline.py"),),
    "features": (("extract", "core/features.py"), ("extract_typed", "core/features.py")),
    "predict": (("score_batch_safely", "scoring.py"),),
    "build+encode": (("build_predictions", "scoring.py"),),
    "outputs": (("batch_outputs", "outputs.py"),),
    "headers": (("picked", "passthrough.py"), ("carry", "passthrough.py")),
    "produce": (("send", "stream/delivery.py"), ("_send", "stream/delivery.py")),
    "poll+reports": (("poll", "kafka_io/producer.py"),),
    "commit": (("_commit", "stream/alo.py"),),
    "account": (("_account", "stream/runner.py"),),
}


def _in(frames: list[str], name: str, path: str) -> bool:
    """Whether a frame is ``name`` (py-spy writes methods as ``Class.name``) in ``path``."""
    return any(path in f and (f.startswith(name + " (") or f".{name} (" in f) for f in frames)


def spy_stages(path: Path) -> dict[str, Any]:
    """Each stage's share of the samples taken inside the loop's ``turn``."""
    shares: dict[str, int] = dict.fromkeys([*SPY_STAGES, "other"], 0)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not _in(frames, "turn", "stream/runner.py"):
            continue
        total += int(n)
        stage = next((name for name, marks in SPY_STAGES.items()
                      if any(_in(frames, f, p) for f, p in marks)), "other")
        shares[stage] += int(n)
    return {"loop_samples": total,
            "share_of_loop": {k: round(v / max(total, 1), 3) for k, v in shares.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--model", choices=["demo", "lr30"], default="lr30")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--baseline", type=Path, action="append", default=[])
    ap.add_argument("--worker-args", default="", help="more flags for the workers")
    ap.add_argument("--headers", action="store_true",
                    help="events carry traceparent and x-request-id headers")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the .prof files")
    ap.add_argument("--sampler", choices=["cprofile", "py-spy"], default="cprofile",
                    help="py-spy: sampled (native frames too, so the cyclic collector "
                    "shows), shares of the loop instead of microseconds")
    ap.add_argument("--spy-seconds", type=int, default=2)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="prof-"))
    keep = a.keep or tmp
    keep.mkdir(parents=True, exist_ok=True)
    model, schema = wb.bundle_and_schema(a.model, tmp)
    t_in = load(a.bootstrap, a.model, a.events, a.headers)
    report: dict[str, Any] = {"model": a.model, "events": a.events, "machine": wb.machine(),
                              "worker_args": a.worker_args, "trees": {}}
    try:
        for i, tree in enumerate([None, *a.baseline]):
            out = keep / f"worker-{i}.{'spy' if a.sampler == 'py-spy' else 'prof'}"
            profile(a, tree, t_in, model, schema, out)
            report["trees"][str(tree or "this tree")] = (
                spy_stages(out) if a.sampler == "py-spy" else stages(out, a.events))
    finally:
        kafka_io.delete_topics(a.bootstrap, [t_in])
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
