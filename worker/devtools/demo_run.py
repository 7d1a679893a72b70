"""``scoring-worker demo``: the whole job on one broker, with a summary at the end.

Trains the demo model (once), starts a real worker process and a monitor (whose status
page's address it prints), streams demo transactions (a few malformed on purpose) with
their labels for a while, then reads back what came out, reports throughput and end-to-end
latency, and leaves report.html (and report.png) in the work folder.
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
from typing import Any

import numpy as np
import orjson

from worker import kafka_io
from worker.devtools.demo import DEMO_ALERTS, train_demo
from worker.devtools.demo_report import fetch_status, write_report
from worker.devtools.produce_demo import DemoTraffic, produce_demo
from worker.errors import ScoringError
from worker.kafka_io.config import Connection, Role, client_config


@dataclass(frozen=True)
class DemoReport:
    events_in: int
    scored: int
    dead_lettered: int
    events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    worker_exit: int
    monitor_exit: int
    rolling_labeled: int | None
    rolling_accuracy: float | None
    rolling_recall: float | None
    rolling_roc_auc: float | None
    rolling_psi: float | None


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
    raise ScoringError(f"a demo process did not become ready (exit code {proc.poll()})")


def _spawn(args: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A ``scoring-worker`` subcommand as a child process, with its metrics port."""
    port = free_port()
    log = log_path.open("wb")
    cmd = [sys.executable, "-m", "worker", *args, "--metrics-port", str(port),
           "--log-level", "WARNING"]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), port


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def rolling_figures(bootstrap: str, topic: str) -> dict[str, object]:
    """The newest rolling-view record of the demo model on the metrics topic."""
    records = kafka_io.drain(bootstrap, topic, 1_000_000, 0.0, idle_s=2.0)
    rolling = [r for r in records if (r.key or b"").endswith(b"|rolling")]
    return orjson.loads(rolling[-1].value or b"{}") if rolling else {}


def run_demo(bootstrap: str, workdir: Path, seconds: float, rate: float
             ) -> tuple[DemoReport, dict[str, Any] | None]:
    """The run's summary, and the monitor's last /api/status."""
    model = workdir / "model"
    if not (model / "model.json").exists():
        train_demo(model)
    run = uuid.uuid4().hex[:6]
    names = ("transactions", "predictions", "dlq", "labels", "metrics", "alerts", "stats")
    t = {k: f"demo-{run}-{k}" for k in names}
    kafka_io.create_topics(bootstrap, {t["transactions"]: 4, t["predictions"]: 4,
                                       t["dlq"]: 1, t["labels"]: 4})
    worker, w_port = _spawn(["run", "--bootstrap", bootstrap, "--input-topic", t["transactions"],
                             "--output-topic", t["predictions"], "--dlq-topic", t["dlq"],
                             "--group", f"demo-{run}", "--model", str(model)],
                            workdir / "worker.log")
    (workdir / "monitor.toml").write_text(DEMO_ALERTS)
    monitor, m_port = _spawn(["monitor", "--config", str(workdir / "monitor.toml"),
                              "--bootstrap", bootstrap,
                              "--predictions-topic", t["predictions"],
                              "--labels-topic", t["labels"], "--metrics-topic", t["metrics"],
                              "--alerts-topic", t["alerts"], "--stats-topic", t["stats"],
                              "--group", f"demo-{run}-monitor", "--instance-id", "demo",
                              # 5-second windows: closed windows to draw within the run
                              "--windows", "5s,5m", "--models", str(model)],
                             workdir / "monitor.log")
    try:
        wait_ready(w_port, worker, 60.0)
        wait_ready(m_port, monitor, 60.0)
        print(f"status page: http://127.0.0.1:{m_port}/ (while the demo runs)", flush=True)
        traffic = DemoTraffic(topic=t["transactions"], count=int(rate * seconds), rate=rate,
                              labels_topic=t["labels"], label_delay_s=2.0, bad_every=200)
        # Demo traffic skips idempotence: its producer-id handshake (about 0.5 s) would
        # otherwise show up as latency of the first events.
        conf = client_config(Role.PRODUCER, Connection(bootstrap), {"enable.idempotence": False})
        sent = produce_demo(traffic, conf)
        preds = kafka_io.drain(bootstrap, t["predictions"], sent.events - sent.malformed, 30.0)
        dead = kafka_io.drain(bootstrap, t["dlq"], sent.malformed, 10.0)
        time.sleep(3.0)  # the last labels' join and a monitor tick
        rolling = rolling_figures(bootstrap, t["metrics"])
        status = fetch_status(m_port)
    finally:
        code = _stop(worker)
        monitor_code = _stop(monitor)
    per_s, p50, p99 = latency_summary(preds)
    report = DemoReport(sent.events, len(preds), len(dead), round(per_s, 1), round(p50, 1),
                        round(p99, 1), code, monitor_code, _count(rolling),
                        _figure(rolling, "accuracy"), _figure(rolling, "recall"),
                        _figure(rolling, "roc_auc"), _figure(rolling, "psi"))
    return report, status


def _count(record: dict[str, object]) -> int | None:
    value = record.get("count")
    return value if isinstance(value, int) else None


def _figure(record: dict[str, object], name: str) -> float | None:
    value = record.get(name)
    return round(float(value), 4) if isinstance(value, int | float) else None


def report_rows(r: DemoReport) -> list[tuple[str, object]]:
    return [("events in", r.events_in), ("scored", r.scored), ("dead-lettered", r.dead_lettered),
            ("events/s", r.events_per_s), ("latency p50 ms", r.latency_p50_ms),
            ("latency p99 ms", r.latency_p99_ms), ("worker exit", r.worker_exit),
            ("monitor exit", r.monitor_exit), ("rolling labeled", r.rolling_labeled),
            ("rolling accuracy", r.rolling_accuracy), ("rolling recall", r.rolling_recall),
            ("rolling ROC AUC", r.rolling_roc_auc), ("rolling PSI", r.rolling_psi)]


def print_report(r: DemoReport) -> None:
    print("\n== scoring-worker demo ==")
    for name, value in report_rows(r):
        print(f"{name:>16}  {value}")
    print(orjson.dumps(asdict(r)).decode())


def main(bootstrap: str, workdir: Path, seconds: float, rate: float) -> int:
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    report, status = run_demo(bootstrap, workdir, seconds, rate)
    title = f"Demo run: {seconds:g} s of traffic at {rate:g} events/s"
    files = write_report(workdir, title, dict(report_rows(report)), status)
    print_report(report)
    print(f"(demo took {time.monotonic() - t0:.0f}s; logs and "
          f"{', '.join(f.name for f in files)} in {workdir})")
    lost = report.events_in - report.scored - report.dead_lettered
    ok = lost == 0 and report.worker_exit == 0 and report.monitor_exit == 0
    return 0 if ok else 1
