"""Worker benchmark: draining throughput and peak RSS, then latency at fixed offered
loads, each beside a no-model forwarder (bench/forwarder.py) measured in the same run.

    python bench/worker_bench.py --model lr30 [--baseline /path/to/main/checkout]
    python bench/worker_bench.py --model demo --rates 1000,5000,20000 --seconds 10
    python bench/worker_bench.py --model ct            # DataFrame pipeline with 2 string columns
    python bench/worker_bench.py --model rf200 --runtime onnx   # or hgb; sklearn or onnx
    python bench/worker_bench.py --model demo --feature-stats --skip latency  # stats on/off
    python bench/worker_bench.py --model lr30 --shadow-compare  # shadow off and on, one run
    python bench/worker_bench.py --model lgbm --skip drain --rates 5000  # or xgb (pickled)
    python bench/worker_bench.py --model demo --processes-compare   # run --processes 1 and 2
    python bench/worker_bench.py --model demo --segment-fields card_id --skip latency  # off/on
    python bench/worker_bench.py --model demo --explain 3 --skip latency  # reasons off and on
    python bench/worker_bench.py --model demo --avro-outputs --skip latency  # JSON and Avro
    python bench/worker_bench.py --model lr30 --trace-compare headers --skip latency  # plain/on
    python bench/worker_bench.py --model lr30 --events 200000 --modes at-least-once \
        --baseline /path/to/old/checkout --repeat 3 --skip latency   # medians, alternating

Drain: ``--events`` are pre-loaded on a 4-partition topic; each system (forwarder,
the baseline worker when ``--baseline`` names a checkout of another commit, the
worker in each ``--modes``) drains them on topics of its own; events/s over the
middle 80 % of the outputs' broker timestamps; the CPU time the process used per event
from ready to drained (all its threads; it moves far less with the machine's other load
than the rate does); the worker's peak RSS (VmHWM; under ``--processes N`` the sum over
the supervisor and its children). Workers run with their
default settings (``--batch-max`` overrides).

Latency: for each rate, each system gets fresh topics with
``message.timestamp.type=LogAppendTime``, so an event's and its output's timestamps
are both the broker's; events are sent at the rate for ``--seconds`` (ticks of 5 ms),
and p50/p99/p99.9 of (output's timestamp - event's timestamp) are reported.
Exactly-once outputs are appended before their transaction commits; ``visible``
adds the wait until a read_committed consumer in this process received them.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import models as bench_models  # bench/models.py: the script's own folder is on sys.path
import numpy as np
import orjson
from confluent_kafka import Consumer, Producer
from procstat import PEAK, cpu_s, rss_mib  # bench/procstat.py

from worker import kafka_io
from worker.devtools import registry_local
from worker.devtools.demo import (
    LR30_FEATURES,
    make_events,
    make_lr30_bundle,
    make_lr30_events,
    train_demo,
)
from worker.devtools.demo_run import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}
#: Under --processes N, how long to let the group settle after /readyz (see System.start).
PROCESSES_SETTLE_S = 8.0


def bundle_and_schema(kind: str, tmp: Path, runtime: str = "sklearn") -> tuple[Path, Path]:
    if kind in bench_models.KINDS:
        path = tmp / f"{kind}.schema.json"
        path.write_bytes(orjson.dumps(bench_models.schema(kind)))
        return bench_models.build(kind, tmp / "model", runtime), path
    if kind == "demo":
        return train_demo(tmp / "model", n=50_000), ROOT / "schemas" / "transaction.schema.json"
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "required": ["id", *LR30_FEATURES],
              "properties": {"id": {"type": "string", "minLength": 1}, "ts": {"type": "integer"},
                             **{f: {"type": "number"} for f in LR30_FEATURES}}}
    path = tmp / "lr30.schema.json"
    path.write_bytes(orjson.dumps(schema))
    return make_lr30_bundle(tmp / "model"), path


def shadow_bundle(kind: str, tmp: Path) -> Path:
    """A second version of the same kind of model, as a shadow candidate (another version:
    the worker does not shadow the version it serves)."""
    if kind == "demo":
        return train_demo(tmp / "shadow", seed=8, n=50_000, version="2")
    return make_lr30_bundle(tmp / "shadow", seed=12, version="2")


def events(kind: str, rng: np.random.Generator, n: int, start: int) -> list[dict[str, Any]]:
    if kind in bench_models.KINDS:
        made = bench_models.events(kind, rng, n, start)
    elif kind == "demo":
        made = make_events(rng, n, start, 0)[0]
    else:
        made = make_lr30_events(rng, n, start)
    if MARKETS:  # --segment-values: a low-cardinality field, skewed as countries are
        weights = 1.0 / np.arange(1, MARKETS + 1)
        picks = rng.choice(MARKETS, n, p=weights / weights.sum()).tolist()
        for event, k in zip(made, picks, strict=True):
            event["market"] = f"m{k:02d}"
    return made


#: ``--segment-values N``: every event carries ``market``, one of N values (0: none).
MARKETS = 0


#: ``--trace-compare``: every event carries trace context and a correlation id, as a traced
#: producer's would (None: no headers).
TRACE_HEADERS: list[tuple[str, bytes]] | None = None
#: ``--trace-compare``'s variants beside the plain worker.
TRACE_VARIANTS = ("headers", "lineage", "tracing", "sdk")


def trace_headers(event_id: str) -> list[tuple[str, bytes]]:
    n = zlib.crc32(event_id.encode()) + 1
    return [("traceparent", f"00-{n:032x}-{n:016x}-01".encode()),
            ("x-request-id", event_id.encode())]


def send(p: Producer, topic: str, batch: list[dict[str, Any]], stamp: bool) -> None:
    for e in batch:
        if stamp:
            e["ts"] = time.time_ns() // 1_000_000
        headers = trace_headers(e["id"]) if TRACE_HEADERS is not None else None
        while True:
            try:
                p.produce(topic, orjson.dumps(e), e["id"].encode(), headers=headers)
                break
            except BufferError:
                p.poll(0.01)
    p.poll(0)


def event_number(key: bytes | None) -> int:
    """Event ids (and keys) end in their sequence number: tx-17, lr30-17."""
    return int((key or b"-1").decode().rsplit("-", 1)[-1])


def steady_rate(stamps: np.ndarray) -> float:
    s = np.sort(stamps)
    lo, hi = int(len(s) * 0.1), int(len(s) * 0.9)
    return (hi - lo) / max((s[hi] - s[lo]) / 1000, 1e-3) if len(s) > 10 else 0.0


@dataclass
class System:
    name: str
    #: ``worker`` (with mode) or ``forwarder``.
    kind: str
    mode: str = "at-least-once"
    #: Checkout to run the worker from (PYTHONPATH); None: this one.
    tree: Path | None = None
    #: More flags for the worker (``--worker-args``, ``--shadow``).
    extra: tuple[str, ...] = ()
    #: A script run instead of ``-m worker`` (bench/traced_worker.py: the OpenTelemetry SDK).
    launcher: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, bs: str, t_in: str, t_out: str, model: Path, schema: Path,
              batch_max: int | None) -> None:
        env = {**os.environ}
        if self.kind == "forwarder":
            cmd = [sys.executable, str(ROOT / "bench" / "forwarder.py"), "--bootstrap", bs,
                   "--input-topic", t_in, "--output-topic", t_out, "--group", f"g-{t_in}"]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
            assert self.proc.stdout is not None
            self.proc.stdout.readline()  # "ready": it owns partitions
            return
        port = free_port()
        start = [str(self.launcher)] if self.launcher else ["-m", "worker"]
        cmd = [sys.executable, *start, "run", "--bootstrap", bs, "--input-topic", t_in,
               "--output-topic", t_out, "--dlq-topic", f"{t_out}-dlq", "--group", f"g-{t_in}",
               "--model", str(model), "--schema", str(schema), "--metrics-port", str(port),
               "--log-level", "WARNING"]
        if self.mode != "at-least-once":
            cmd += ["--guarantee", self.mode, "--instance-id", f"bench-{t_in}"]
        if batch_max:
            cmd += ["--batch-max", str(batch_max)]
        cmd += list(self.extra)
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.tree or ROOT, stdout=subprocess.DEVNULL)
        wait_ready(port, self.proc, 90)
        if "--processes" in self.extra:
            # /readyz is 200 once one child owns partitions; the others may still be joining,
            # and the rebalance they cause would land in the latency run (seen: p99 2.9 s).
            time.sleep(PROCESSES_SETTLE_S)

    def cpu_s(self) -> float:
        """CPU seconds used so far by the system's processes (under --processes N, the
        supervisor and its children)."""
        assert self.proc is not None
        return sum(cpu_s(p) for p in [self.proc.pid, *children(self.proc.pid)])

    def stop(self) -> tuple[int, float | None]:
        """Exit status and peak RSS (MiB) of a worker."""
        assert self.proc is not None
        pids = [self.proc.pid, *children(self.proc.pid)]  # run --processes N: the tree
        peak = sum(rss_mib(p, PEAK) for p in pids) if self.kind == "worker" else None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120), peak


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def topics(bs: str, config: dict[str, str] | None = None) -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    t_in, t_out = f"bench-{run}-in", f"bench-{run}-out"
    kafka_io.create_topics(bs, {t_in: 4, t_out: 4, f"{t_out}-dlq": 1}, config=config)
    return t_in, t_out


def drop(bs: str, t_in: str, t_out: str) -> None:
    kafka_io.delete_topics(bs, [t_in, t_out, f"{t_out}-dlq"])


def drain(a: argparse.Namespace, s: System, model: Path, schema: Path) -> dict[str, Any]:
    bs = a.bootstrap
    t_in, t_out = topics(bs)
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000})
    rng = np.random.default_rng(1)
    for start in range(0, a.events, 50_000):
        send(p, t_in, events(a.model, rng, min(50_000, a.events - start), start), False)
    p.flush(120)
    s.start(bs, t_in, t_out, model, schema, a.batch_max)
    cpu_before = s.cpu_s()  # start-up (imports, the model's load) not counted
    out = kafka_io.drain(bs, t_out, a.events, 600, idle_s=5)
    cpu = s.cpu_s() - cpu_before
    code, peak = s.stop()
    drop(bs, t_in, t_out)
    stamps = np.array([r.timestamp_ms for r in out], dtype=np.float64)
    return {"system": s.name, "events_per_s": round(steady_rate(stamps)), "outputs": len(out),
            "peak_rss_mib": None if peak is None else round(peak, 1), "exit": code,
            # What a core dedicated to the system would give: the basis of projections.
            # Not under --processes: its children drain during the settling wait, before
            # the count starts (their start-up would count otherwise).
            "cpu_us_per_event": (None if "--processes" in s.extra
                                 else round(cpu / max(1, len(out)) * 1e6, 2))}


def drain_rounds(a: argparse.Namespace, systems: list[System], model: Path,
                 schema: Path) -> list[dict[str, Any]]:
    """Each system drains ``--repeat`` times, the order reversed every round (so no system
    always runs first or last on a shared machine); with more than one round, each
    system's median and its ratio to the first worker (the baseline, when there is one)."""
    rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
    for r in range(a.repeat):
        for s in systems if r % 2 == 0 else systems[::-1]:
            rounds[s.name].append(drain(a, s, model, schema))
    if a.repeat == 1:
        return [runs[0] for runs in rounds.values()]
    medians = {name: float(np.median([x["events_per_s"] for x in runs]))
               for name, runs in rounds.items()}
    cpu = {name: (float(np.median(known)) if (known := [
               x["cpu_us_per_event"] for x in runs if x["cpu_us_per_event"] is not None])
               else None) for name, runs in rounds.items()}
    first = next((s.name for s in systems if s.kind == "worker"), None)
    return [{"system": name, "median_events_per_s": round(medians[name]),
             "ratio_to_first_worker": (round(medians[name] / medians[first], 3)
                                       if first and medians[first] else None),
             "median_cpu_us_per_event": None if (c := cpu[name]) is None else round(c, 2),
             # CPU per event moves far less with the machine's other load than the rate.
             "cpu_ratio_to_first_worker": (round(base / c, 3) if first and c and (
                 base := cpu[first]) else None),
             "runs": runs} for name, runs in rounds.items()]


class Visible(threading.Thread):
    """A read_committed consumer noting when each output key became visible here."""

    def __init__(self, bs: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.seen: dict[bytes, float] = {}
        self.stop = False
        self.c = Consumer({"bootstrap.servers": bs, "group.id": f"vis-{uuid.uuid4().hex}",
                           "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                           "fetch.wait.max.ms": 5})
        self.c.subscribe([topic])

    def run(self) -> None:
        while not self.stop:
            for m in self.c.consume(1000, 0.05):
                if m.error() is None:
                    self.seen.setdefault(m.key() or b"", time.time() * 1000)
        self.c.close()


def pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "p99.9": None}
    p50, p99, p999 = (round(float(v), 1) for v in np.percentile(values, [50, 99, 99.9]))
    return {"p50": p50, "p99": p99, "p99.9": p999}


def latency(a: argparse.Namespace, s: System, rate: float, model: Path,
            schema: Path) -> dict[str, Any]:
    bs = a.bootstrap
    t_in, t_out = topics(bs, LOG_APPEND)
    s.start(bs, t_in, t_out, model, schema, a.batch_max)
    p = Producer({"bootstrap.servers": bs, "linger.ms": 0, "enable.idempotence": True})
    rng = np.random.default_rng(7)
    send(p, t_in, events(a.model, rng, 500, 9_000_000), True)  # warm-up, not measured
    p.flush(30)
    kafka_io.drain(bs, t_out, 500, 60, idle_s=1)
    # A read_committed reader in this process costs CPU: only where visibility differs.
    visible = Visible(bs, t_out) if s.mode == "exactly-once" else None
    if visible is not None:
        visible.start()
    n = int(rate * a.seconds)
    tick = max(1, round(rate * 0.005))
    t0 = time.monotonic()
    for k in range(0, n, tick):
        send(p, t_in, events(a.model, rng, min(tick, n - k), 10_000_000 + k), True)
        time.sleep(max(0.0, t0 + (k + tick) / rate - time.monotonic()))
    p.flush(60)
    outs = {r.key: r.timestamp_ms for r in kafka_io.drain(bs, t_out, n + 500, 120, idle_s=3)}
    ins = {r.key: r.timestamp_ms for r in kafka_io.drain(bs, t_in, n + 500, 60, idle_s=1)
           if event_number(r.key) >= 10_000_000}
    time.sleep(1.0)
    code, _ = s.stop()
    drop(bs, t_in, t_out)
    lat = [outs[k] - ins[k] for k in ins if k in outs]
    seen: list[float] = []
    if visible is not None:
        visible.stop = True
        seen = [visible.seen[k] - ins[k] for k in ins if k in visible.seen]
    return {"system": s.name, "rate": rate, "events": n, "outputs": len(lat),
            "latency_ms": pct(lat), "visible_ms": pct(seen), "exit": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--model", choices=["demo", "lr30", *bench_models.KINDS], default="lr30")
    ap.add_argument("--runtime", choices=["sklearn", "onnx"], default="sklearn",
                    help="model runtime of the bundle (ct, rf200, hgb)")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--rates", default="1000,5000,20000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--modes", default="at-least-once,exactly-once")
    ap.add_argument("--latency-modes", default="at-least-once,exactly-once")
    ap.add_argument("--batch-max", type=int, default=None)
    ap.add_argument("--baseline", type=Path, action="append", default=[],
                    help="checkout of another commit: its worker drains too (at-least-once); "
                    "repeat the flag for more than one")
    ap.add_argument("--baseline-variants", action="store_true",
                    help="each --baseline runs in every mode and variant too (--modes, "
                    "--feature-stats, --shadow-compare), not only at-least-once")
    ap.add_argument("--repeat", type=int, default=1,
                    help="drain each system this many times, alternating the order (forward, "
                    "then backward, ...); the report adds each system's median")
    ap.add_argument("--skip", default="", help="drain, latency and/or forwarder")
    ap.add_argument("--worker-args", default="", help="more flags for the workers (one string)")
    ap.add_argument("--feature-stats", action="store_true",
                    help="each mode also with --feature-stats-topic (statistics on)")
    ap.add_argument("--shadow", action="store_true",
                    help="workers also score every batch with a second model (shadow)")
    ap.add_argument("--avro-outputs", action="store_true",
                    help="each worker also with --output-format avro (a registry-local of "
                    "the bench's own on a free port), in the same run")
    ap.add_argument("--shadow-compare", action="store_true",
                    help="each worker runs twice in the same run: without and with --shadow")
    ap.add_argument("--trace-compare", nargs="?", const=",".join(TRACE_VARIANTS), default="",
                    help="events carry traceparent and x-request-id headers; each worker "
                    "runs plain, with --pass-headers, with --lineage, with --tracing (API "
                    "only: no SDK), and with --tracing under the OpenTelemetry SDK; or only "
                    f"those listed ({','.join(TRACE_VARIANTS)})")
    ap.add_argument("--processes-compare", default="",
                    help="each worker also runs as run --processes N for each N listed (2,4)")
    ap.add_argument("--segment-fields", default="",
                    help="each mode also with --segment-fields (for example card_id, a string "
                         "field of every demo event)")
    ap.add_argument("--segment-values", type=int, default=0,
                    help="events also carry 'market', one of N values (Zipf-like), for "
                         "--segment-fields market: a country-like field")
    ap.add_argument("--explain", type=int, default=0,
                    help="each worker also with --explain K (reason codes on), in the same run")
    a = ap.parse_args()
    global MARKETS
    MARKETS = a.segment_values
    if (a.shadow or a.shadow_compare) and a.model in bench_models.KINDS:
        ap.error("--shadow: the demo and lr30 models have a shadow version")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    model, schema = bundle_and_schema(a.model, tmp, a.runtime)
    fwd = System("forwarder", "forwarder")
    extra = (*a.worker_args.split(),
             *(("--allow-pickle", "true") if a.model in bench_models.PICKLED else ()))
    variants: list[tuple[str, tuple[str, ...]]] = [("", extra)]
    if a.shadow or a.shadow_compare:
        shadow_topic = f"bench-shadow-{uuid.uuid4().hex[:8]}"
        kafka_io.create_topics(a.bootstrap, {shadow_topic: 4})
        shadowed = (*extra, "--shadow-model", str(shadow_bundle(a.model, tmp)),
                    "--shadow-topic", shadow_topic)
        variants = [*(variants if a.shadow_compare else []), (" + shadow", shadowed)]
    for n in (int(x) for x in a.processes_compare.split(",") if x):
        variants += [(f"{name} x{n} processes", (*more, "--processes", str(n)))
                     for name, more in variants if "processes" not in name]
    if a.feature_stats:  # each variant again, publishing feature statistics, in the same run
        stats_topic = f"bench-stats-{uuid.uuid4().hex[:8]}"
        kafka_io.create_topics(a.bootstrap, {stats_topic: 1})
        variants += [(f"{name} + feature stats", (*more, "--feature-stats-topic", stats_topic))
                     for name, more in variants]
    if a.segment_fields:  # each variant again, copying segment fields, in the same run
        variants += [(f"{name} + segments", (*more, "--segment-fields", a.segment_fields))
                     for name, more in variants]
    if a.explain:  # each variant again, with reasons on every prediction, in the same run
        variants += [(f"{name} + explain {a.explain}", (*more, "--explain", str(a.explain)))
                     for name, more in variants]
    launchers: dict[str, Path] = {}
    if a.trace_compare:  # each variant again with headers and with tracing, in the same run
        global TRACE_HEADERS
        TRACE_HEADERS = []
        sdk = " + tracing (SDK)"
        launchers = {name + sdk: ROOT / "bench" / "traced_worker.py" for name, _ in variants}
        chosen = set(a.trace_compare.split(","))
        if unknown := chosen - set(TRACE_VARIANTS):
            ap.error(f"--trace-compare: unknown {', '.join(sorted(unknown))}")
        variants += [
            *[(f"{name} + headers", (*more, "--pass-headers", "true"))
              for name, more in variants if "headers" in chosen],
            *[(f"{name} + lineage", (*more, "--lineage", "true")) for name, more in variants
              if "lineage" in chosen],
            *[(f"{name} + tracing (API)", (*more, "--tracing", "true"))
              for name, more in variants if "tracing" in chosen],
            *[(name + sdk, (*more, "--tracing", "true")) for name, more in variants
              if "sdk" in chosen]]
    registry = None
    if a.avro_outputs:  # each variant again, writing Avro predictions, in the same run
        registry = registry_local.LocalRegistry(port=free_port(), state_root=tmp / "registry")
        registry_local.start(registry)
        variants += [(f"{name} + avro outputs", (*more, "--output-format", "avro",
                                                 "--schema-registry", registry.url))
                     for name, more in variants]
    try:
        run(a, variants, launchers, model, schema, fwd)
    finally:
        if registry is not None:
            registry_local.stop(registry)


def run(a: argparse.Namespace, variants: list[tuple[str, tuple[str, ...]]],
        launchers: dict[str, Path], model: Path, schema: Path, fwd: System) -> None:
    workers = {m + name: System(f"worker {m}{name}", "worker", m, extra=more,
                                launcher=launchers.get(name))
               for m in a.modes.split(",") if m for name, more in variants}
    report: dict[str, Any] = {"model": a.model, "runtime": a.runtime, "events": a.events,
                              "batch_max": a.batch_max,
                              "machine": machine(), "drain": [], "latency": []}
    if "drain" not in a.skip:
        baselines = [System(f"baseline worker {tree}", "worker", tree=tree)
                     for tree in a.baseline]
        if a.baseline_variants:  # each baseline in every mode and variant, like this tree
            baselines = [System(f"{tree} worker {m}{name}", "worker", m, tree=tree, extra=more)
                         for tree in a.baseline for m in a.modes.split(",") if m
                         for name, more in variants]
        systems = [*([] if "forwarder" in a.skip else [fwd]), *baselines, *workers.values()]
        report["drain"] = drain_rounds(a, systems, model, schema)
    if "latency" not in a.skip:
        lat_workers = [System(f"worker {m}{name}", "worker", m, extra=more,
                              launcher=launchers.get(name))
                       for m in a.latency_modes.split(",") if m
                       for name, more in variants]
        for rate in (float(r) for r in a.rates.split(",")):
            for s in (fwd, *lat_workers):
                report["latency"].append(latency(a, s, rate, model, schema))
    print(orjson.dumps(report).decode())


def machine() -> str:
    return (f"{platform.machine()} cores={len(os.sched_getaffinity(0))} "
            f"load={os.getloadavg()[0]:.1f} python={platform.python_version()} "
            f"at={time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
