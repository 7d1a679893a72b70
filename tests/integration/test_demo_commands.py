"""The demo commands against the real broker: produce-demo (with labels and drift) and demo."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator

from tests.integration.helpers import ROOT, read_topic
from worker.devtools import browser


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_produce_demo_sends_valid_events_and_their_labels(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    tx, labels = topic_factory("tx", 2), topic_factory("labels", 2)
    done = cli("produce-demo", "--bootstrap", kafka_bootstrap, "--topic", tx, "--count", "300",
               "--rate", "0", "--labels-topic", labels, "--label-delay", "0.5",
               "--drift-after", "200")
    assert done.returncode == 0, done.stderr
    assert "300 events (100 drifted, 0 malformed), 300 labels" in done.stdout
    events = read_topic(kafka_bootstrap, tx, 300, settle=0.5)
    got_labels = read_topic(kafka_bootstrap, labels, 300, settle=0.5)
    tx_schema = Draft202012Validator(orjson.loads((ROOT / "schemas/transaction.schema.json")
                                                  .read_bytes()))
    label_schema = Draft202012Validator(orjson.loads((ROOT / "schemas/label.schema.json")
                                                     .read_bytes()))
    ids = set()
    for e in events:
        record = orjson.loads(e.value or b"")
        tx_schema.validate(record)
        assert e.key == record["card_id"].encode()
        ids.add(record["id"])
    label_ids = set()
    for lab in got_labels:
        record = orjson.loads(lab.value or b"")
        label_schema.validate(record)
        assert record["label"] in (0, 1)
        label_ids.add(record["id"])
    assert len(ids) == 300 and label_ids == ids


def test_demo_runs_the_whole_job_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    done = cli("demo", "--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path),
               "--seconds", "3", "--rate", "400")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-2])
    assert summary["events_in"] == 1200
    assert summary["dead_lettered"] == 6  # one in 200 is malformed on purpose
    assert summary["scored"] == 1194
    assert summary["worker_exit"] == 0 and summary["monitor_exit"] == 0
    # every scored event got its label: the monitor's rolling view covers them all
    assert summary["rolling_labeled"] == 1194
    assert 0.5 < summary["rolling_accuracy"] <= 1 and 0 <= summary["rolling_recall"] <= 1
    # the status page's address while it ran; the report of the run it leaves behind
    assert "status page: http://127.0.0.1:" in done.stdout
    report = (tmp_path / "report.html").read_text()
    assert "window.STATUS = {" in report and '"events in":1200' in report
    assert "report.html" in done.stdout.splitlines()[-1]
    if browser.chromium() is not None:
        assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
