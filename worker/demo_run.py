"""``scoring-worker demo``: the whole job on one broker, with a summary at the end.

Trains the demo model (once), starts a real worker process, streams demo
transactions (a few malformed on purpose) with their labels for a while, then
reads back what came out and reports throughput and end-to-end latency.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

from worker import kafka_io
from worker.demo import train_demo
from worker.errors import ScoringError
from worker.produce_demo import DemoTraffic, produce_demo


@dataclass(frozen=True)
class DemoReport:
    events_in: int
    scored: int
    dead_lettered: int
    events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    worker_exit: int


def latency_summary(preds: list[kafka_io.Received]) -> tuple[float, float, float]:
    """Events/s over the predictions' span, and p50/p99 of (prediction time - event time)."""
    if not preds:
        return 0.0, float("nan"), float("nan")
    stamps = np.array([p.timestamp_ms for p in preds], dtype=np.float64)
    event_ts = np.array([orjson.loads(p.value or b"{}").get("event_ts", np.nan) for p in preds])
    lat = stamps - event_ts
    lat = lat[np.isfinite(lat)]
    span_s = max(float(stamps.max() - stamps.min()) / 1000, 1e-3)
    p50, p99 = np.percentile(lat, [50, 99]) if lat.size else (float("nan"), float("nan"))
    return len(preds) / span_s, float(p50), float(p99)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll the worker's /readyz: traffic should start once it owns partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise ScoringError(f"the demo worker did not become ready (exit code {proc.poll()})")


def run_demo(bootstrap: str, workdir: Path, seconds: float, rate: float) -> DemoReport:
    model = workdir / "model"
    if not (model / "model.json").exists():
        train_demo(model)
    run = uuid.uuid4().hex[:6]
    port = free_port()
    topics = {"in": f"demo-{run}-transactions", "out": f"demo-{run}-predictions",
              "dlq": f"demo-{run}-dlq", "labels": f"demo-{run}-labels"}  # fmt: skip
    kafka_io.create_topics(bootstrap, {topics["in"]: 4, topics["out"]: 4,
                                       topics["dlq"]: 1, topics["labels"]: 4})  # fmt: skip
    cmd = [sys.executable, "-m", "worker", "run", "--bootstrap", bootstrap,
           "--input-topic", topics["in"], "--output-topic", topics["out"],
           "--dlq-topic", topics["dlq"], "--group", f"demo-{run}", "--model", str(model),
           "--metrics-port", str(port), "--log-level", "WARNING"]  # fmt: skip
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, worker, 60.0)
        traffic = DemoTraffic(topic=topics["in"], count=int(rate * seconds), rate=rate,
                              labels_topic=topics["labels"], label_delay_s=2.0, bad_every=200)
        # Demo traffic skips idempotence: its producer-id handshake (about 0.5 s) would
        # otherwise show up as latency of the first events.
        conf = {"bootstrap.servers": bootstrap, "enable.idempotence": "false"}
        sent = produce_demo(traffic, conf)
        expect_dead = sent.malformed
        preds = kafka_io.drain(bootstrap, topics["out"], sent.events - expect_dead, 30.0)
        dead = kafka_io.drain(bootstrap, topics["dlq"], expect_dead, 10.0)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        log.close()
    per_s, p50, p99 = latency_summary(preds)
    return DemoReport(sent.events, len(preds), len(dead), round(per_s, 1), round(p50, 1),
                      round(p99, 1), code)  # fmt: skip


def print_report(r: DemoReport) -> None:
    rows = [("events in", r.events_in), ("scored", r.scored), ("dead-lettered", r.dead_lettered),
            ("events/s", r.events_per_s), ("latency p50 ms", r.latency_p50_ms),
            ("latency p99 ms", r.latency_p99_ms), ("worker exit", r.worker_exit)]  # fmt: skip
    print("\n== scoring-worker demo ==")
    for name, value in rows:
        print(f"{name:>16}  {value}")
    print(orjson.dumps(asdict(r)).decode())


def main(bootstrap: str, workdir: Path, seconds: float, rate: float) -> int:
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    report = run_demo(bootstrap, workdir, seconds, rate)
    print_report(report)
    print(f"(demo took {time.monotonic() - t0:.0f}s; worker log in {workdir / 'worker.log'})")
    lost = report.events_in - report.scored - report.dead_lettered
    return 0 if lost == 0 and report.worker_exit == 0 else 1
