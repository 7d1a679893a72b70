"""Per-feature drift live, on the real broker: an exactly-once worker publishing feature
statistics and a monitor reading them. A shift in one numeric input (amount ten times
larger) ranks that feature first, and the feature drift alert names it; the gauges and
/api/features show it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer

from tests.integration.helpers import ROOT, WorkerProc, read_topic
from worker import kafka_io
from worker.devtools.demo import make_events, train_demo
from worker.devtools.demo_run import free_port


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return bytes(r.read())


def send(bootstrap: str, topic: str, events: list[dict[str, object]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for e in events:
        p.produce(topic, orjson.dumps(e), str(e["id"]).encode())
        p.poll(0)
    assert p.flush(60) == 0


def test_a_shifted_feature_ranks_first_and_its_alert_names_it(
    kafka_bootstrap: str, group_factory: Callable[[], str], tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    model = train_demo(tmp_path / "model", n=5000)
    run = f"fd-{uuid.uuid4().hex[:8]}"
    t = {k: f"{run}-{k}" for k in ("tx", "pred", "dlq", "metrics", "alerts", "stats", "fs")}
    kafka_io.create_topics(kafka_bootstrap, {t["tx"]: 2, t["pred"]: 2, t["dlq"]: 1})
    port = free_port()
    log = (tmp_path / "monitor.log").open("ab")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "worker", "monitor", "--bootstrap", kafka_bootstrap,
         "--predictions-topic", t["pred"], "--labels-topic", "", "--metrics-topic",
         t["metrics"], "--alerts-topic", t["alerts"], "--stats-topic", t["stats"],
         "--feature-stats-topic", t["fs"], "--models", str(model), "--group", group_factory(),
         "--instance-id", "fd", "--windows", "5m", "--tick-ms", "500",
         "--commit-interval-ms", "200", "--metrics-port", str(port),
         "--state-dir", str(tmp_path / "state")],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    worker = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["tx"],
                         "--output-topic", t["pred"], "--dlq-topic", t["dlq"],
                         "--group", group_factory(), "--model", str(model), "--metrics-port",
                         "0", "--guarantee", "exactly-once", "--instance-id", f"{run}-w",
                         "--feature-stats-topic", t["fs"],
                         "--feature-stats-interval-ms", "1000"], tmp_path / "worker.log")
    try:
        events, _ = make_events(np.random.default_rng(5), 3000, 0, int(time.time() * 1000))
        for e in events[1500:]:
            e["amount"] = float(e["amount"]) * 10  # type: ignore[arg-type]
        started = time.monotonic()
        send(kafka_bootstrap, t["tx"], events)
        top, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline:
            assert monitor.poll() is None, (tmp_path / "monitor.log").read_text()[-3000:]
            try:
                doc = orjson.loads(get(port, "/api/features"))
            except OSError:
                doc = {"windows": []}
            rolling = [w for w in doc["windows"] if w["window"] == "rolling"]
            if rolling and rolling[0]["rows"] == 3000:
                top = rolling[0]["features"][0]
                break
            time.sleep(0.5)
        assert top is not None, (tmp_path / "monitor.log").read_text()[-3000:]
        seen = time.monotonic() - started
        assert top["feature"] == "amount" and top["psi"] > 0.25, top
        # amounts are long-tailed: most of ten times the usual still lie within the reference
        assert top["out_of_range_rate"] > 0.05 and len(top["psi_history"]) >= 1
        alerts = [orjson.loads(m.value or b"{}")
                  for m in read_topic(kafka_bootstrap, t["alerts"], 1, timeout=30, settle=1)]
        fired = [(a["alert"], a.get("feature")) for a in alerts if a["status"] == "firing"]
        assert ("feature_drift:amount", "amount") in fired, alerts
        assert all(f == "amount" for name, f in fired if name.startswith("feature_drift")), fired
        metrics = get(port, "/metrics").decode()
        assert 'scoring_feature_psi{feature="amount",model="fraud-demo",model_version="1",' \
               'window="rolling"}' in metrics
        report(f"feature drift: amount x10 in half of 3,000 events ranked first (rolling PSI "
               f"{top['psi']:.2f}, out of range {top['out_of_range_rate']:.2f}) and alerted; "
               f"{seen:.1f}s from sending to the monitor's figures over all 3,000")
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.output()[-3000:]
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(60) == 0, (tmp_path / "monitor.log").read_text()[-3000:]
