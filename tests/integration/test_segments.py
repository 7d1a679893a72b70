"""Segments live, on the real broker: a worker copying ``country`` into its predictions and a
monitor keeping the figures per country. The model stops catching fraud in one market (its
frauds there look like ordinary transactions): the segment rule fires naming that country,
while the overall recall stays above the overall rule's threshold and its alert stays quiet.
Labels travel inline (the worker's ``label_field``), so the test needs no labels topic."""

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
from worker.devtools.demo import DEMO_FEATURES, make_events, train_demo
from worker.devtools.demo_run import free_port

N = 4000
COUNTRIES = ("DE", "FR", "IT", "ES")


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return bytes(r.read())


def events_with_a_blind_market(rng: np.random.Generator) -> list[dict[str, object]]:
    """N labeled events in the past 20 minutes, a country each (FR: 15 %); FR's frauds get
    the features of an ordinary transaction, so the model misses them there only."""
    events, labels = make_events(rng, N, 0, int(time.time() * 1000) - 1_200_000,
                                 include_label=True)
    ordinary = [e for e, y in zip(events, labels, strict=True) if y == 0]
    countries = rng.choice(len(COUNTRIES), N, p=[0.4, 0.15, 0.25, 0.2]).tolist()
    for i, (e, c) in enumerate(zip(events, countries, strict=True)):
        e["country"] = COUNTRIES[c]
        if COUNTRIES[c] == "FR" and e["label"] == 1:
            e.update({k: ordinary[i % len(ordinary)][k] for k in DEMO_FEATURES})
    return events


def test_a_recall_drop_in_one_segment_fires_the_segment_rule_naming_it(
    kafka_bootstrap: str, group_factory: Callable[[], str], tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    model = train_demo(tmp_path / "model", n=5000)
    run = f"seg-{uuid.uuid4().hex[:8]}"
    t = {k: f"{run}-{k}" for k in ("tx", "pred", "dlq", "metrics", "alerts", "stats")}
    kafka_io.create_topics(kafka_bootstrap, {t["tx"]: 2, t["pred"]: 2, t["dlq"]: 1})
    port = free_port()
    log_path = tmp_path / "monitor.log"
    # The demo model's recall is about 0.37 at its threshold: the overall rule at 0.25, the
    # segment rule the default (recall below 0.2 with at least 500 labeled).
    config = tmp_path / "monitor.toml"
    config.write_text('[[alerts]]\nname = "recall_low"\nmetric = "recall"\nop = "<"\n'
                      'threshold = 0.25\nmin_count = 200\nmin_coverage = 0.8\n')
    monitor = subprocess.Popen(
        [sys.executable, "-m", "worker", "monitor", "--config", str(config),
         "--bootstrap", kafka_bootstrap,
         "--predictions-topic", t["pred"], "--labels-topic", "", "--metrics-topic",
         t["metrics"], "--alerts-topic", t["alerts"], "--stats-topic", t["stats"],
         "--models", str(model), "--group", group_factory(), "--instance-id", "seg",
         "--windows", "5m", "--tick-ms", "500", "--commit-interval-ms", "200",
         "--metrics-port", str(port), "--state-dir", str(tmp_path / "state")],
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    worker = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["tx"],
                         "--output-topic", t["pred"], "--dlq-topic", t["dlq"],
                         "--group", group_factory(), "--model", str(model), "--metrics-port",
                         "0", "--instance-id", f"{run}-w", "--label-field", "label",
                         "--segment-fields", "country"], tmp_path / "worker.log")
    try:
        events = events_with_a_blind_market(np.random.default_rng(11))
        p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
        for e in events:
            p.produce(t["tx"], orjson.dumps(e), str(e["id"]).encode())
            p.poll(0)
        assert p.flush(60) == 0
        started = time.monotonic()
        rows, deadline = None, time.monotonic() + 90
        while time.monotonic() < deadline:
            assert monitor.poll() is None, log_path.read_text()[-3000:]
            try:
                doc = orjson.loads(get(port, "/api/segments"))
            except OSError:
                doc = {"windows": []}
            rolling = [w for w in doc["windows"] if w["window"] == "rolling"]
            if rolling and sum(r["predicted"] for r in rolling[0]["rows"]) == N:
                rows = {r["segment"]: r for r in rolling[0]["rows"]}
                break
            time.sleep(0.5)
        assert rows is not None, log_path.read_text()[-3000:]
        seen = time.monotonic() - started
        assert set(rows) == set(COUNTRIES)
        assert rows["FR"]["count"] >= 500 and rows["FR"]["recall"] < 0.2, rows["FR"]
        assert all(rows[c]["recall"] > 0.3 for c in ("DE", "IT", "ES")), rows
        alerts = [orjson.loads(m.value or b"{}")
                  for m in read_topic(kafka_bootstrap, t["alerts"], 1, timeout=30, settle=2)]
        firing = [a for a in alerts if a["status"] == "firing"]
        assert [(a["alert"], a["segment"]) for a in firing if "segment" in a] == [
            ("segment_recall_low:country=FR", {"field": "country", "value": "FR"})], alerts
        assert not [a for a in firing if a["alert"] == "recall_low"], alerts
        metrics = get(port, "/metrics").decode()
        overall = [line for line in metrics.splitlines() if line.startswith(
            'scoring_model_recall_ratio{model="fraud-demo",model_version="1",window="rolling"')]
        recall = float(overall[0].rsplit(" ", 1)[1])
        assert recall > 0.25, overall  # above the overall rule's threshold: quiet
        assert ('scoring_segment_recall_ratio{field="country",model="fraud-demo",'
                'model_version="1",segment="FR",window="rolling"}') in metrics
        report(f"segments: frauds made invisible in FR (15 % of {N:,} events): FR recall "
               f"{rows['FR']['recall']:.3f} over {rows['FR']['count']} labeled, "
               f"segment_recall_low:country=FR fired; overall recall {recall:.3f}, no "
               f"overall alert; {seen:.1f}s from the last send to the monitor's figures")
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.output()[-3000:]
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(60) == 0, log_path.read_text()[-3000:]
