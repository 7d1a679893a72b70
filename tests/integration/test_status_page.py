"""The monitor's status page in a real headless Chromium, on drifted demo traffic.

A worker and a monitor run against the real broker; produce-demo sends healthy traffic,
then drifted traffic. Once every label is joined and the PSI alert fires, Chromium loads
``/``; the figures the page shows must equal ``/api/status`` and the model-metrics topic,
its charts must show the closed windows (recall falling) with the alert thresholds and the
PSI alert, and a screenshot is saved (to ``$SCORING_STATUS_SCREENSHOT`` too, when set).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.helpers import ROOT, WorkerProc, read_topic
from worker.devtools import browser
from worker.devtools.demo import train_demo
from worker.devtools.demo_report import write_report
from worker.devtools.demo_run import free_port

# Skipped on a machine without Chromium, but not in CI, where `make tools` installs it.
pytestmark = pytest.mark.skipif(browser.chromium() is None and not os.environ.get("CI"),
                                reason="chromium is not installed (make tools)")

COUNT, RATE, DRIFT_AFTER = 60_000, 4000, 24_000
RULES = """
[[alerts]]
name = "score_drift"
metric = "psi"
op = ">"
threshold = 0.25
min_count = 1000

[[alerts]]
name = "recall_low"
metric = "recall"
op = "<"
threshold = 0.18
min_count = 8000
"""


class Dom(HTMLParser):
    """Every element's tag and attributes, and the text of the cells that carry data-k."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, str] = {}  # data-k -> shown text
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        self._open = a.get("data-k")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.text[self._open] = self.text.get(self._open, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def find(self, tag: str, **want: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag
                and all(a.get(k.replace("_", "-")) == v for k, v in want.items())]


def get_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
        return dict(orjson.loads(r.read()))


def settled(port: int, labels: int, timeout: float = 150) -> dict[str, Any]:
    """/api/status once every label is joined, the PSI alert fires and figures stop moving."""
    deadline, previous = time.monotonic() + timeout, None
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = get_status(port)
        except OSError:  # not serving yet (a restart)
            time.sleep(0.5)
            continue
        join = status["join"] or {}
        firing = {a["alert"] for a in status["firing"]}
        figures = [(m["rolling"] and m["rolling"]["count"], m["rolling"] and m["rolling"]["psi"],
                    m["windows"]) for m in status["models"]]
        if join.get("joined") == labels and "score_drift" in firing and figures == previous:
            return status
        previous = figures if join.get("joined") == labels else None
        time.sleep(1.0)
    raise AssertionError(f"the monitor did not settle: {status}")


def test_status_page_in_chromium_shows_the_published_figures_and_the_drift(
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
    (tmp_path / "monitor.toml").write_text(RULES)
    port, mon_log = free_port(), (tmp_path / "monitor.log").open("ab")
    cmd = [sys.executable, "-m", "worker", "monitor", "--config", str(tmp_path / "monitor.toml"),
           "--bootstrap", kafka_bootstrap, "--predictions-topic", t["pred"],
           "--labels-topic", t["labels"], "--metrics-topic", t["metrics"],
           "--alerts-topic", t["alerts"], "--stats-topic", t["stats"], "--group", group_factory(),
           "--instance-id", "page", "--models", str(model), "--tick-ms", "500",
           "--windows", "5s,5m", "--metrics-port", str(port)]
    monitor = subprocess.Popen(cmd, stdout=mon_log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        fed = subprocess.run(
            [sys.executable, "-m", "worker", "produce-demo", "--bootstrap", kafka_bootstrap,
             "--topic", t["tx"], "--count", str(COUNT), "--rate", str(RATE),
             "--drift-after", str(DRIFT_AFTER), "--labels-topic", t["labels"],
             "--label-delay", "0.5"],
            capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert fed.returncode == 0, fed.stderr
        settled(port, COUNT)
        url = f"http://127.0.0.1:{port}/"
        dom = Dom()
        dom.feed(browser.dump_dom(url))
        status = get_status(port)
        shot = browser.screenshot(url, tmp_path / "status-page.png", size=(1280, 1180))
        topic = latest_records(kafka_bootstrap, t["metrics"])
        monitor.send_signal(signal.SIGTERM)  # a restart: the page reads its history back
        assert monitor.wait(60) == 0
        monitor = subprocess.Popen(cmd, stdout=mon_log, stderr=subprocess.STDOUT, cwd=ROOT)
        again = settled(port, COUNT)
    finally:
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(60) == 0, (tmp_path / "monitor.log").read_text()[-2000:]
        mon_log.close()
        assert worker.stop() == 0
    if os.environ.get("SCORING_STATUS_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SCORING_STATUS_SCREENSHOT"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    check_page_equals_status(dom, status)
    check_status_equals_topic(status, topic)
    check_charts_show_the_drift(dom, status)
    check_restart_keeps_the_history(status, again)


def latest_records(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """What the compacted model-metrics topic keeps: the latest record of each key."""
    return {(r.key or b"").decode(): orjson.loads(r.value or b"{}")
            for r in read_topic(bootstrap, topic, 1, timeout=10, settle=2.0)}


def shown(dom: Dom, key: str) -> float | None:
    (cell,) = dom.find("td", data_k=key)
    return None if cell["data-v"] == "null" else float(cell["data-v"])


def check_page_equals_status(dom: Dom, status: dict[str, Any]) -> None:
    (body,) = dom.find("body")
    assert body.get("data-ready") == "1", "the page never rendered"
    assert not dom.find("p", class_="error"), "the page could not read api/status"
    (m,) = status["models"]
    ident = f"{m['model']}|{m['model_version']}"
    expected: dict[str, Any] = {}
    for name in ("accuracy", "recall", "roc_auc", "psi", "coverage", "count", "predicted"):
        expected[f"{ident}|rolling|{name}"] = m["rolling"][name]
        for size in status["windows"]:
            if m["windows"].get(size):
                expected[f"{ident}|{size}|{name}"] = m["windows"][size][-1][name]
    for name in ("joined", "expired_predictions", "unmatched_labels", "predictions", "labels"):
        expected[f"join|{name}"] = status["join"][name]
    for a in status["firing"]:
        expected[f"alert|{a['alert']}|{a['model']}|{a['model_version']}"] = a["value"]
    assert f"{ident}|5s|recall" in expected and "alert|score_drift|fraud-demo|1" in expected
    for key, value in expected.items():
        assert shown(dom, key) == value, (key, shown(dom, key), value)
        text = dom.text[key]  # what a person reads: 4 decimals for ratios
        assert text == str(value) if isinstance(value, int) else abs(float(text) - value) < 6e-5
    assert not dom.find("p", id="partial-note")  # one instance owns every partition
    bars = {a["data-bucket"]: int(a["data-count"]) for a in dom.find("rect")}
    assert bars == status["join"]["label_delay_seconds"]


def check_status_equals_topic(status: dict[str, Any], topic: dict[str, dict[str, Any]]) -> None:
    (m,) = status["models"]
    ident = f"{m['model']}|{m['model_version']}"
    volatile = {"computed_at", "window_start", "window_end"}  # the rolling view moves on
    rolling = topic[f"{ident}|rolling"]
    assert {k: v for k, v in m["rolling"].items() if k not in volatile} == {
        k: v for k, v in rolling.items() if k not in volatile}
    assert m["windows"]["5s"]
    for size, windows in m["windows"].items():
        for w in windows:
            assert w == topic[f"{ident}|{size}|{w['window_start']}"]


def check_charts_show_the_drift(dom: Dom, status: dict[str, Any]) -> None:
    (m,) = status["models"]
    ident = f"{m['model']}|{m['model_version']}"
    windows = m["windows"]["5s"]
    for metric in status["chart_metrics"]:
        (svg,) = dom.find("svg", data_chart=f"{ident}|{metric}")
        assert int(svg["data-window-points"]) == sum(w[metric] is not None for w in windows)
        assert int(svg["data-rolling-points"]) >= 2
        if metric in status["estimated"]:  # the demo bundle has a calibration map
            est = sum(w[f"est_{metric}"] is not None for w in windows)
            assert int(svg["data-est-window-points"]) == est > 0, metric
    assert dom.find("div", data_reliability=ident)  # the calibration table
    (maturity,) = dom.find("svg", data_chart=f"{ident}|maturity")
    assert int(maturity["data-windows"]) == len(m["maturity"]["5s"]) > 0
    full = [w["recall"] for w in windows if w["count"] >= 3000]
    assert max(full) > 0.2 and full[-1] < 0.12, f"recall did not drop: {full}"
    assert dom.find("line", data_rule="score_drift", data_threshold="0.25")
    assert dom.find("line", data_rule="recall_low", data_threshold="0.18")
    psi_chart = [a for t, a in dom.elements if a.get("data-alert-marker") == "score_drift"]
    assert psi_chart, "the PSI alert is not marked on the chart"
    assert dom.find("tr", data_alert="score_drift", data_model=ident)


def check_restart_keeps_the_history(before: dict[str, Any], after: dict[str, Any]) -> None:
    (m0,), (m1,) = before["models"], after["models"]
    # Every window published before the restart is back; one more may have closed since (the
    # first snapshot was once taken 5 ms before the last window's end).
    assert m0["windows"]["5s"] and all(w in m1["windows"]["5s"] for w in m0["windows"]["5s"])
    assert [a["alert"] for a in after["firing"]] == [a["alert"] for a in before["firing"]]
    seen = {p["at"] for p in m1["rolling_history"]}
    assert {p["at"] for p in m0["rolling_history"][:-1]} <= seen  # the newest point floats


def test_an_instance_owning_some_partitions_says_so_on_the_page(tmp_path: Path) -> None:
    """The page as the demo's report embeds it (no server): a partial instance's status."""
    status = {"generated_at": 1_796_008_000_000, "instance": "b",
              "partitions": {"owned": [1, 3], "total": 4, "complete": False},
              "history": {"span_s": 21600, "max_points": 720}, "windows": ["5m"],
              "chart_metrics": ["accuracy", "recall", "roc_auc", "psi", "coverage"],
              "thresholds": [], "models": [], "firing": [], "join": None}
    (html, *_) = write_report(tmp_path, "partial", {"events in": 7}, status)
    raw, dom = browser.dump_dom(html.resolve().as_uri(), budget_ms=1000), Dom()
    dom.feed(raw)
    assert dom.find("body")[0].get("data-ready") == "1"
    assert dom.find("p", id="partial-note") and not dom.find("p", class_="error")
    assert "owns stage-two partitions [1, 3] of 4: it shows only the model versions" in raw
