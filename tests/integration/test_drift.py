"""Drift through the whole product: produce-demo -> worker -> monitor -> alerts (each with its
trace context: the monitor runs with --tracing under the OpenTelemetry SDK)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from tests.integration.helpers import ROOT, TRACED_LAUNCHER, WorkerProc, read_topic
from worker.devtools.demo import train_demo

RULES = """
[[alerts]]
name = "score_drift"
metric = "psi"
op = ">"
threshold = 0.25
window = "rolling"
min_count = 1000
cooldown_s = 3600

[[alerts]]
name = "recall_low"
metric = "recall"
op = "<"
threshold = 0.18
window = "rolling"
min_count = 8000
cooldown_s = 3600
"""


def test_drift_fires_psi_and_recall_alerts_after_the_drift_only(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    model = train_demo(tmp_path / "model")
    t = {name: topic_factory(name, parts) for name, parts in
         (("tx", 4), ("pred", 4), ("dlq", 1), ("labels", 4), ("metrics", 1), ("alerts", 1),
          ("stats", 1))}
    worker = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["tx"],
                         "--output-topic", t["pred"], "--dlq-topic", t["dlq"],
                         "--group", group_factory(), "--model", str(model),
                         "--metrics-port", "0"], tmp_path / "worker.log")
    config = tmp_path / "monitor.toml"
    config.write_text(RULES)
    mon_log = (tmp_path / "monitor.log").open("ab")
    launcher = tmp_path / "traced.py"  # the monitor under the OpenTelemetry SDK
    launcher.write_text(TRACED_LAUNCHER)
    monitor = subprocess.Popen(
        [sys.executable, str(launcher), "monitor", "--config", str(config), "--tracing", "true",
         "--bootstrap", kafka_bootstrap, "--predictions-topic", t["pred"],
         "--labels-topic", t["labels"], "--metrics-topic", t["metrics"],
         "--alerts-topic", t["alerts"], "--stats-topic", t["stats"], "--group", group_factory(),
         "--instance-id", "drift", "--models", str(model), "--tick-ms", "500",
         "--metrics-port", "0"], stdout=mon_log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        fed = subprocess.run(
            [sys.executable, "-m", "worker", "produce-demo", "--bootstrap", kafka_bootstrap,
             "--topic", t["tx"], "--count", "80000", "--rate", "5000", "--drift-after", "10000",
             "--labels-topic", t["labels"], "--label-delay", "0.5"],
            capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert fed.returncode == 0, fed.stderr
        alerts = wait_for_alerts(kafka_bootstrap, t["alerts"], {"score_drift", "recall_low"})
        preds = read_topic(kafka_bootstrap, t["pred"], 80000, settle=0.5)
    finally:
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(60) == 0, (tmp_path / "monitor.log").read_text()[-2000:]
        mon_log.close()
        assert worker.stop() == 0
    drift_ts = min(orjson.loads(p.value or b"{}")["event_ts"] for p in preds
                   if int(orjson.loads(p.value or b"{}")["id"].split("-")[1]) >= 10000)
    schema = Draft202012Validator(orjson.loads((ROOT / "schemas/model_alert.schema.json")
                                               .read_bytes()))
    for a in alerts:
        schema.validate(a)
    # Each rule's first record fires, after the drift began; none resolves while the drift
    # lasts. Healthy live recall is about 0.33 (about 150 positives at min_count, sd about
    # 0.04); drifted traffic is caught at about 0.01, so with 70,000 drifted events of
    # 80,000 recall ends near 0.05 (sd about 0.01): 0.18 is about 4 sd from both.
    assert [(a["alert"], a["status"]) for a in alerts] in (
        [("score_drift", "firing"), ("recall_low", "firing")],
        [("recall_low", "firing"), ("score_drift", "firing")],
    ), alerts
    for a in alerts:
        assert a["at"] >= drift_ts, f"{a['alert']} fired before the drift: {a}"
    # Each alert record carries the trace context of a span of its own (--tracing).
    contexts = {r.headers["traceparent"] for r in read_topic(kafka_bootstrap, t["alerts"], 2)}
    assert len(contexts) == 2 and all(len(c.split("-")) == 4 for c in contexts), contexts
    psi = next(a for a in alerts if a["alert"] == "score_drift")
    recall = next(a for a in alerts if a["alert"] == "recall_low")
    assert psi["value"] > 0.25 and recall["value"] < 0.18


def wait_for_alerts(bootstrap: str, topic: str, names: set[str],
                    timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [orjson.loads(r.value or b"{}")
                for r in read_topic(bootstrap, topic, len(names), timeout=5, settle=1)]
        if names <= {a["alert"] for a in seen}:
            return seen
        time.sleep(1)
    raise AssertionError(f"alerts {names} did not all fire; saw {seen}")
