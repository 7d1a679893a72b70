"""A monitor started before its input topics exist waits for them, not ready, and picks
them up within seconds of their creation (deployments start everything at once)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.integration.helpers import ROOT, WorkerProc, read_topic
from worker import kafka_io
from worker.devtools.demo import train_demo
from worker.devtools.demo_run import free_port


def readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def test_monitor_and_worker_started_before_any_topic_exists_pick_them_up(
    kafka_bootstrap: str, group_factory: Callable[[], str], tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    model = train_demo(tmp_path / "model", n=5000)
    run = f"late-{uuid.uuid4().hex[:8]}"
    t = {k: f"{run}-{k}" for k in ("tx", "pred", "dlq", "labels", "metrics", "alerts", "stats")}
    group = group_factory()
    port = free_port()
    log = (tmp_path / "monitor.log").open("ab")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "worker", "monitor", "--bootstrap", kafka_bootstrap,
         "--predictions-topic", t["pred"], "--labels-topic", t["labels"],
         "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"],
         "--stats-topic", t["stats"], "--group", group, "--instance-id", "late",
         "--windows", "5m", "--tick-ms", "500", "--commit-interval-ms", "200",
         "--metrics-port", str(port), "--state-dir", str(tmp_path / "state")],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while "waiting for input topics" not in (tmp_path / "monitor.log").read_text():
            assert monitor.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "monitor.log").read_text()[-3000:]
            time.sleep(0.2)
        assert readyz(port) == 503  # alive, but blind until its inputs exist
        worker = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["tx"],
                             "--output-topic", t["pred"], "--dlq-topic", t["dlq"],
                             "--group", group_factory(), "--model", str(model),
                             "--metrics-port", "0"], tmp_path / "worker.log")
        time.sleep(3)
        started = time.monotonic()
        fed = subprocess.run(
            [sys.executable, "-m", "worker", "produce-demo", "--bootstrap", kafka_bootstrap,
             "--topic", t["tx"], "--count", "3000", "--rate", "1000",
             "--labels-topic", t["labels"], "--label-delay", "0.5"],
            capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert fed.returncode == 0, fed.stderr
        joined, seen_after = 0, None
        while time.monotonic() - started < 60:
            stats = read_topic(kafka_bootstrap, t["stats"], 1, timeout=2, settle=0.3)
            if stats:
                joined = orjson.loads(stats[-1].value or b"{}").get("joined", 0)
            if joined and readyz(port) == 200:
                seen_after = time.monotonic() - started
                break
            time.sleep(0.5)
        assert seen_after is not None, (tmp_path / "monitor.log").read_text()[-3000:]
        assert seen_after < 30, seen_after
        windows = read_topic(kafka_bootstrap, t["metrics"], 1, timeout=10, settle=1)
        assert any(orjson.loads(r.value or b"{}")["count"] > 0 for r in windows)
        report(f"late topics: monitor's first joined figures {seen_after:.1f}s after traffic "
               f"began ({joined} joined); /readyz 503 while it waited")
    finally:
        monitor.send_signal(signal.SIGTERM)
        code = monitor.wait(60)
        log.close()
        if worker is not None:
            assert worker.stop() == 0
        kafka_io.delete_topics(kafka_bootstrap, [*t.values(), *(
            f"{group}-{s}" for s in ("join", "partials", "join-changelog", "global-changelog"))])
    assert code == 0, (tmp_path / "monitor.log").read_text()[-3000:]
    log_text = (tmp_path / "monitor.log").read_text()
    assert log_text.count("waiting for input topics") == 1
