"""Reason codes on the real broker: a worker with --explain 3 publishes the reasons that
``score-file --explain 3`` writes for the same events (a one-hot + imputer + logistic
regression pipeline on a DataFrame, with missing values)."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.integration.helpers import ROOT, WorkerProc, produce, read_topic
from tests.integration.model_kinds import KINDS
from worker.cli import main
from worker.devtools.demo import make_events, train_demo
from worker.devtools.demo_run import free_port
from worker.model import write_bundle

TopicFactory = Callable[..., str]


def same_reasons(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the last bits (the stream and score-file cut batches differently)."""
    if a["output"] != b["output"] or not math.isclose(a["baseline"], b["baseline"],
                                                      abs_tol=1e-12):
        return False
    return [(r["feature"], r["value"]) for r in a["top"]] == [
        (r["feature"], r["value"]) for r in b["top"]] and all(
        math.isclose(x["contribution"], y["contribution"], abs_tol=1e-9)
        for x, y in zip(a["top"], b["top"], strict=True))


def test_streamed_reasons_equal_score_file_reasons(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path, report: Callable[[str], None],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kind = KINDS["payments-lr"]()
        bundle = write_bundle(tmp_path / "bundle", kind.estimator, name="payments",
                              version="1", task="binary", sample=kind.rows)
    events = kind.events()
    t = {"in": topic_factory("in", 2), "out": topic_factory("out", 2),
         "dlq": topic_factory("dlq", 1)}
    produce(kafka_bootstrap, t["in"], ((None, orjson.dumps(e)) for e in events))
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"], "--group",
                    group_factory(), "--model", str(bundle), "--metrics-port", "0",
                    "--explain", "3"], tmp_path / "worker.log")
    try:
        streamed = read_topic(kafka_bootstrap, t["out"], len(events), settle=0.5)
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    stream = {r["id"]: r for r in (orjson.loads(m.value or b"") for m in streamed)}
    src, out = tmp_path / "events.jsonl", tmp_path / "scored.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    assert main(["score-file", str(src), str(out), "--model", str(bundle), "--explain", "3"]) == 0
    batch = {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert sorted(stream) == sorted(batch) == sorted(e["id"] for e in events)
    for ident, record in stream.items():
        reasons = record["reasons"]
        assert len(reasons["top"]) == 3 and reasons["output"] == "log_odds"
        assert same_reasons(reasons, batch[ident]["reasons"]), ident
        assert record["score"] == batch[ident]["score"] or math.isclose(
            record["score"], batch[ident]["score"], abs_tol=1e-12)
    features = {r["feature"] for rec in stream.values() for r in rec["reasons"]["top"]}
    assert features <= {"country", "channel", "amount", "items", "first_time", "risk"}
    report(f"reasons: {len(stream)} streamed predictions with --explain 3 equal score-file's; "
           f"features named {sorted(features)}")


def top_positive(reasons: dict[str, Any]) -> str:
    """The test's own recount: the first reason with a positive contribution."""
    return next((r["feature"] for r in reasons["top"] if r["contribution"] > 0), "__none__")


def test_the_monitor_shows_the_top_reasons_behind_alerts(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path, report: Callable[[str], None],
) -> None:
    """score-file --explain 3 predictions of the demo model on the predictions topic: the
    monitor's /api/reasons holds, for the rolling view, each feature's count of alerts
    whose largest positive contribution it is, equal to a recount of the records."""
    model = train_demo(tmp_path / "model", n=3000)
    src, out = tmp_path / "events.jsonl", tmp_path / "scored.jsonl"
    events, _ = make_events(np.random.default_rng(5), 2000, 0,
                            int(time.time() * 1000) - 600_000)
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    assert main(["score-file", str(src), str(out), "--model", str(model), "--explain", "3"]) == 0
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    expected = Counter(top_positive(r["reasons"]) for r in records if r["label"] == 1)
    pred = topic_factory("pred", 2)
    # a retry of the first 100: first sightings only are counted
    produce(kafka_bootstrap, pred, ((None, orjson.dumps(r)) for r in records + records[:100]))
    port = free_port()
    monitor = subprocess.Popen(
        [sys.executable, "-m", "worker", "monitor", "--bootstrap", kafka_bootstrap,
         "--predictions-topic", pred, "--labels-topic", "", "--metrics-topic",
         topic_factory("metrics", 1), "--alerts-topic", topic_factory("alerts", 1),
         "--stats-topic", topic_factory("stats", 1), "--models", str(model), "--group",
         group_factory(), "--instance-id", "reasons", "--windows", "5m", "--tick-ms", "300",
         "--commit-interval-ms", "200", "--metrics-port", str(port), "--state-dir",
         str(tmp_path / "state")],
        stdout=(tmp_path / "monitor.log").open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    started, rows = time.monotonic(), None
    try:
        while time.monotonic() < started + 60:
            assert monitor.poll() is None, (tmp_path / "monitor.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/reasons",
                                            timeout=5) as r:
                    doc = orjson.loads(r.read())
            except OSError:
                doc = {"windows": []}
            rolling = [w for w in doc["windows"] if w["window"] == "rolling"]
            if rolling and rolling[0]["alerts"] == sum(expected.values()):
                rows = rolling[0]["rows"]
                break
            time.sleep(0.3)
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(30)
    assert rows is not None, (tmp_path / "monitor.log").read_text()[-3000:]
    assert {r["feature"]: r["alerts"] for r in rows} == dict(expected)
    assert [r["alerts"] for r in rows] == sorted((r["alerts"] for r in rows), reverse=True)
    report(f"reasons in the monitor: {sum(expected.values())} alerts of {len(records)} "
           f"predictions (100 retried), /api/reasons top reasons "
           f"{[(r['feature'], r['alerts']) for r in rows]} equal a recount; "
           f"{time.monotonic() - started:.1f}s from the monitor's start")
