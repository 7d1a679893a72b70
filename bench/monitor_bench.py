"""Monitor benchmark: joined pairs/s of one monitor next to events/s of one worker, same events.

    flock /tmp/bench.lock python bench/monitor_bench.py --events 300000

One run, one machine, the same events: ``--events`` demo transactions and their
labels are pre-loaded (4 partitions each). One worker process scores the
transactions (its steady events/s: the middle 80 % of its predictions' broker
timestamps, as in worker_bench.py). Then one monitor instance (``--windows 1h``,
state on disk) drains the predictions and the labels; its steady joined pairs/s
is the middle 80 % of the Kafka timestamps of its joins (the joined markers in its
join changelog, written at the commit of the transaction that joined them). A pair is
two input messages (a prediction and a label).
Reports peak RSS of both processes and the monitor's disk use. Prints one JSON
object. Target: the monitor joins at least half as many pairs/s as the worker
scores events/s.

The monitor drains the same predictions twice, in two consumer groups: first with the
bundle stripped of its calibration map (no estimated figures: the baseline), then with it
(estimated figures, as ``train_demo`` writes them): the ``estimates`` entry is the second.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from procstat import NOW, PEAK, rss_mib  # bench/procstat.py: this folder is on sys.path

from worker import kafka_io
from worker.devtools.demo import make_events, train_demo
from worker.devtools.demo_run import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def preload(bootstrap: str, t_in: str, t_labels: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                  "queue.buffering.max.messages": 1_000_000})
    rng = np.random.default_rng(1)
    now = int(time.time() * 1000)
    for start in range(0, n, 50_000):
        events, labels = make_events(rng, min(50_000, n - start), start, now - 3_600_000)
        for e, y in zip(events, labels, strict=True):
            key = e["id"].encode()
            for topic, value in ((t_in, orjson.dumps(e)),
                                 (t_labels, orjson.dumps({"id": e["id"], "label": y}))):
                while True:
                    try:
                        p.produce(topic, value, key)
                        break
                    except BufferError:
                        p.poll(0.01)
        p.poll(0)
    p.flush(120)


def steady(times: np.ndarray, values: np.ndarray, total: int) -> float:
    """Rate between the samples where 10 % and 90 % of ``total`` were reached."""
    lo = times[np.searchsorted(values, 0.1 * total)]
    hi = times[np.searchsorted(values, 0.9 * total)]
    return 0.8 * total / max(hi - lo, 1e-3)


def joined(port: int) -> int | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    m = re.search(rb"^scoring_monitor_joined_total (\S+)$", body, re.M)
    return int(float(m.group(1))) if m else None


def join_times(bootstrap: str, topic: str) -> np.ndarray:
    """Kafka timestamps (s) of the joined markers in the join changelog, sorted."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "enable.partition.eof": True})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    stamps, done = [], set()
    while len(done) < len(parts):
        for m in c.consume(10_000, 2.0):
            if m.error() is not None:
                done.add(m.partition())
            elif (m.key() or b"")[:1] == b"e" and (m.value() or b"")[:1] == b"\x02":
                stamps.append(m.timestamp()[1] / 1000)
    c.close()
    return np.sort(np.array(stamps))


def run_worker(args: argparse.Namespace, model: Path, t: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, "-m", "worker", "run", "--bootstrap", args.bootstrap,
           "--input-topic", t["in"], "--output-topic", t["pred"], "--dlq-topic", t["dlq"],
           "--group", f"{t['run']}-worker", "--model", str(model),
           "--schema", str(ROOT / "schemas" / "transaction.schema.json"),
           "--batch-max", "2000", "--metrics-port", str(port),
           "--log-level", "WARNING"]
    worker = subprocess.Popen(cmd)
    wait_ready(port, worker, 60)
    out = kafka_io.drain(args.bootstrap, t["pred"], args.events, 600, idle_s=5)
    rate = steady(np.sort(np.array([r.timestamp_ms / 1000 for r in out])),
                  np.arange(1, len(out) + 1), len(out))
    peak = rss_mib(worker.pid, PEAK)
    worker.send_signal(signal.SIGTERM)
    return {"worker_events_per_s": round(rate), "worker_predictions": len(out),
            "worker_peak_rss_mib": round(peak, 1), "worker_exit": worker.wait(60)}


def without_calibration(model: Path, out: Path) -> Path:
    """A copy of the bundle whose manifest has no calibration map (the artifact's SHA-256
    is in the manifest, not the other way round, so the copy still loads)."""
    shutil.copytree(model, out)
    manifest = orjson.loads((out / "model.json").read_bytes())
    manifest.pop("calibration", None)
    (out / "model.json").write_bytes(orjson.dumps(manifest))
    return out


def run_monitor(args: argparse.Namespace, model: Path, t: dict[str, str],
                state: Path, tag: str = "monitor") -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, "-m", "worker", "monitor", "--bootstrap", args.bootstrap,
           "--predictions-topic", t["pred"], "--labels-topic", t["labels"],
           "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"],
           "--stats-topic", t["stats"], "--group", f"{t['run']}-{tag}",
           "--instance-id", "bench", "--windows", "1h", "--models", str(model),
           "--tick-ms", "250", "--metrics-port", str(port), "--state-dir", str(state),
           "--log-level", "WARNING"]
    t0 = time.monotonic()
    mon = subprocess.Popen(cmd)
    samples: list[tuple[float, int]] = []
    rss: list[tuple[float, float]] = []
    deadline = t0 + args.timeout
    while time.monotonic() < deadline and mon.poll() is None:
        n = joined(port)
        now = time.monotonic() - t0
        if n is not None:
            samples.append((now, n))
            rss.append((now, rss_mib(mon.pid, NOW)))
            if n >= args.events:
                break
        time.sleep(0.25)
    peak = rss_mib(mon.pid, PEAK)
    disk = sum(f.stat().st_size for f in state.rglob("*") if f.is_file())
    mon.send_signal(signal.SIGTERM)
    code = mon.wait(120)
    times = np.array([s[0] for s in samples])
    total = int(samples[-1][1]) if samples else 0
    joins = join_times(args.bootstrap, f"{t['run']}-{tag}-join-changelog")
    rate = steady(joins, np.arange(1, len(joins) + 1), len(joins)) if len(joins) else 0
    return {"monitor_pairs_per_s": round(rate), "monitor_join_markers": len(joins),
            "monitor_joined": total,
            "monitor_seconds_to_join_all": round(float(times[-1]), 1) if total else None,
            "monitor_peak_rss_mib": round(peak, 1), "monitor_disk_mib": round(disk / 2**20, 1),
            "monitor_rss_mib_over_time": [(round(a, 1), round(b)) for a, b in rss[:: 8]],
            "monitor_exit": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    model = train_demo(tmp / "model", n=50_000)
    run = f"mbench-{uuid.uuid4().hex[:6]}"
    t = {"run": run, **{k: f"{run}-{k}" for k in ("in", "pred", "dlq", "labels", "metrics",
                                                    "alerts", "stats")}}
    kafka_io.create_topics(args.bootstrap, {t["in"]: 4, t["pred"]: 4, t["dlq"]: 1,
                                            t["labels"]: 4, t["metrics"]: 1, t["alerts"]: 1,
                                            t["stats"]: 1})
    try:
        preload(args.bootstrap, t["in"], t["labels"], args.events)
        worker = run_worker(args, model, t)
        plain = without_calibration(model, tmp / "model-plain")
        baseline = run_monitor(args, plain, t, tmp / "state-plain", "plain")
        monitor = run_monitor(args, model, t, tmp / "state", "monitor")
    finally:
        internal = [f"{run}-{tag}-{s}" for tag in ("plain", "monitor")
                    for s in ("join", "partials", "join-changelog", "global-changelog")]
        kafka_io.delete_topics(args.bootstrap, [v for k, v in t.items() if k != "run"]
                               + internal)
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = monitor["monitor_pairs_per_s"] / max(worker["worker_events_per_s"], 1)
    print(orjson.dumps({
        "events": args.events, **worker, **monitor,
        "baseline_without_estimates": {k: v for k, v in baseline.items()
                                       if k != "monitor_rss_mib_over_time"},
        "monitor_pairs_per_worker_event": round(ratio, 2),
        "machine": f"{platform.machine()} cores={len(os.sched_getaffinity(0))}",
        "python": platform.python_version(),
    }, default=float).decode())


if __name__ == "__main__":
    main()
