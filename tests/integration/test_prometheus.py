"""A real Prometheus scraping a real worker and monitor on the real broker.

Demo traffic with labels flows through a worker process and a monitor process; the
Debian Prometheus server scrapes both every second with deploy/alerts.yml loaded (the
same file docker compose mounts; only the targets differ: 127.0.0.1 ports here, service
names there). Throughput, latency and rolling accuracy are read back through Prometheus'
HTTP API, every alert rule and every dashboard query must evaluate without error, and
`promtool check metrics` lints a scrape of each process.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ROOT, WorkerProc
from worker import kafka_io
from worker.devtools.demo import train_demo

DEPLOY = ROOT / "deploy"
TopicFactory = Callable[..., str]
DEADLINE_S = 75.0


def tool(name: str) -> str:
    """The Debian prometheus package's binary; never skipped silently."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("SCORING_SKIP_PROMETHEUS_TESTS") == "1":
        pytest.skip(f"{name} not installed and SCORING_SKIP_PROMETHEUS_TESTS=1")
    pytest.fail(f"{name} is not installed: run `make tools` (Debian's prometheus package)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
        return body


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._fh.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Prometheus:
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": promql})
        body = json.loads(http_get(f"{self.url}/api/v1/query?{q}"))
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of an instant vector, None while it is empty or NaN."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, (promql, result)
        v = float(result[0]["value"][1])
        return None if math.isnan(v) else v

    def api(self, path: str) -> Any:
        body = json.loads(http_get(f"{self.url}/api/v1/{path}"))
        assert body["status"] == "success", body
        return body["data"]


def job_names() -> list[str]:
    """The job names of deploy/prometheus.yml, which the alert rules match on."""
    return re.findall(r"^\s*-\s*job_name:\s*(\S+)\s*$", (DEPLOY / "prometheus.yml").read_text(),
                      re.M)


def prometheus_config(worker_port: int, monitor_port: int) -> str:
    """deploy/prometheus.yml's jobs with loopback targets, and deploy/alerts.yml itself.

    Written as JSON, which Prometheus reads as the YAML it is."""
    jobs = job_names()
    assert {"scoring-worker", "scoring-monitor"} <= set(jobs), jobs
    targets = {"scoring-worker": worker_port, "scoring-monitor": monitor_port}
    return json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "alerts.yml")],
        "scrape_configs": [{"job_name": job,
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for job, port in targets.items()],
    }, indent=2)


def dashboard_queries() -> list[str]:
    """Every PromQL query of the Grafana dashboards, Grafana's variables filled in."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text()))
    return [q.replace("$__rate_interval", "15s").replace("$__interval", "5s")
            .replace("$model", ".*") for q in found]


def wait_until(what: str, probe: Callable[[], Any], deadline: float) -> Any:
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        else:
            if last is not None and last is not False:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


@pytest.fixture
def stack(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """Worker, monitor, demo producer and Prometheus, all stopped at the end."""
    prometheus, promtool = tool("prometheus"), tool("promtool")
    model = train_demo(tmp_path / "fraud", seed=3, n=20_000)
    t = {"in": topic_factory("in", 4), "out": topic_factory("out", 4),
         "dlq": topic_factory("dlq", 1), "labels": topic_factory("labels", 4),
         "metrics": topic_factory("metrics", 1), "alerts": topic_factory("alerts", 1),
         "stats": topic_factory("stats", 1)}
    worker_port, monitor_port, prom_port = free_port(), free_port(), free_port()
    monitor_group = group_factory()
    procs: list[Proc | WorkerProc] = []
    try:
        worker = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                             "--output-topic", t["out"], "--dlq-topic", t["dlq"],
                             "--group", group_factory(), "--model", str(model),
                             "--schema", str(ROOT / "schemas" / "transaction.schema.json"),
                             "--metrics-port", str(worker_port), "--stats-interval-ms", "1000"],
                            tmp_path / "worker.log")
        procs.append(worker)
        monitor = Proc([sys.executable, "-m", "worker", "monitor", "--bootstrap", kafka_bootstrap,
                        "--predictions-topic", t["out"], "--labels-topic", t["labels"],
                        "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"],
                        "--stats-topic", t["stats"], "--group", monitor_group,
                        "--instance-id", "prom-test", "--models", str(model),
                        "--partitions", "2", "--horizon-s", "60", "--tick-ms", "1000",
                        "--metrics-port", str(monitor_port)], tmp_path / "monitor.log")
        procs.append(monitor)
        config = tmp_path / "prometheus.yml"
        config.write_text(prometheus_config(worker_port, monitor_port))
        check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        server = Proc([prometheus, f"--config.file={config}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                      tmp_path / "prometheus.log")
        procs.append(server)

        def worker_ready() -> bool:
            assert worker.proc.poll() is None, worker.output()[-3000:]
            try:
                return http_get(f"http://127.0.0.1:{worker_port}/readyz") == b"ready\n"
            except urllib.error.HTTPError:
                return False

        # Traffic starts once the worker owns its partitions, so that the latency measured
        # is the steady one, not the wait for the consumer group.
        wait_until("the worker ready", worker_ready, time.monotonic() + 60)
        producer = Proc([sys.executable, "-m", "worker", "produce-demo", "--bootstrap",
                         kafka_bootstrap, "--topic", t["in"], "--labels-topic", t["labels"],
                         "--label-delay", "1", "--count", "60000", "--rate", "1000",
                         "--bad-every", "200", "--seed", "3"],
                        tmp_path / "producer.log")
        procs.append(producer)
        yield {"prometheus": Prometheus(f"http://127.0.0.1:{prom_port}"), "promtool": promtool,
               "worker_port": worker_port, "monitor_port": monitor_port,
               "procs": {"worker": worker, "monitor": monitor, "prometheus": server,
                         "producer": producer}}
    finally:
        codes = {}
        for p in reversed(procs):  # producer first, Prometheus, then monitor and worker
            try:
                codes[p.log.stem] = p.stop(timeout=30)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                codes[p.log.stem] = p.proc.wait(10)
        g = monitor_group
        kafka_io.delete_topics(
            kafka_bootstrap,
            [f"{g}-join", f"{g}-partials", f"{g}-join-changelog", f"{g}-global-changelog"],
        )
    assert all(p.proc.poll() is not None for p in procs)
    assert codes.get("worker") == 0 and codes.get("monitor") == 0, codes


def test_prometheus_scrapes_worker_and_monitor_and_evaluates_the_rules(
    stack: dict[str, Any], report: Callable[[str], None]
) -> None:
    prom: Prometheus = stack["prometheus"]
    procs = stack["procs"]
    t0 = time.monotonic()
    deadline = t0 + DEADLINE_S

    def alive() -> None:
        for name, p in procs.items():
            if name != "producer":
                assert p.proc.poll() is None, f"{name} exited:\n{p.tail()}"

    def ready() -> bool:
        alive()
        http_get(prom.url + "/-/ready")
        return True

    wait_until("Prometheus ready", ready, deadline)

    def targets_up() -> bool:
        alive()
        active = prom.api("targets")["activeTargets"]
        return len(active) == 2 and all(t["health"] == "up" for t in active)

    wait_until("both targets up", targets_up, deadline)

    throughput_q = "sum(rate(scoring_events_scored_total[10s]))"
    latency_q = ("histogram_quantile(0.99, sum by (le) "
                 "(rate(scoring_end_to_end_latency_seconds_bucket[10s])))")
    p50_q = latency_q.replace("0.99", "0.5")
    accuracy_q = 'scoring_model_accuracy_ratio{window="rolling"}'

    def positive(promql: str) -> Callable[[], float | None]:
        def probe() -> float | None:
            alive()
            v = prom.value(promql)
            return v if v is not None and v > 0 else None

        return probe

    throughput = wait_until("throughput in Prometheus", positive(throughput_q), deadline)
    latency_p99 = wait_until("p99 latency in Prometheus", positive(latency_q), deadline)
    latency_p50 = prom.value(p50_q)

    def accuracy() -> list[dict[str, Any]] | None:
        alive()
        return prom.query(accuracy_q) or None

    series = wait_until("rolling accuracy in Prometheus", accuracy, deadline)
    seen_after = time.monotonic() - t0

    assert throughput > 0
    assert 0 < latency_p99 < 5, latency_p99
    assert latency_p50 is not None and 0 < latency_p50 <= latency_p99
    assert len(series) == 1, series  # one model version
    acc = float(series[0]["value"][1])
    labels = series[0]["metric"]
    assert 0 <= acc <= 1, acc
    assert labels["model"] == "fraud-demo" and labels["job"] == "scoring-monitor", labels
    labeled = prom.value('scoring_model_labeled_events{window="rolling"}')
    assert labeled is not None and labeled > 0

    def lag_series() -> float | None:
        # librdkafka reports a partition's lag once it knows both its end and our position
        return prom.value("sum(scoring_consumer_lag_messages)")

    lag = wait_until("consumer lag in Prometheus", lag_series, deadline)
    assert lag >= 0

    # Every rule of deploy/alerts.yml is loaded and evaluates on the live series.
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    names = {r["name"] for r in rules}
    want = set(re.findall(r"^\s*- alert: (\w+)", (DEPLOY / "alerts.yml").read_text(), re.M))
    assert names == want
    wait_until("every rule evaluated", lambda: all(
        r.get("lastEvaluation", "").startswith("20") for g in prom.api("rules")["groups"]
        for r in g["rules"]), deadline)
    for g in prom.api("rules")["groups"]:
        for r in g["rules"]:
            assert r["health"] == "ok", (r["name"], r.get("lastError"))

    # Every dashboard query runs (PromQL errors come back as status "error").
    queries = dashboard_queries()
    for q in queries:
        prom.query(q)

    # promtool's linter on a real scrape of each process.
    for name in ("worker", "monitor"):
        body = http_get(f"http://127.0.0.1:{stack[name + '_port']}/metrics")
        lint = subprocess.run([stack["promtool"], "check", "metrics"], input=body,
                              capture_output=True, timeout=60)
        out = (lint.stdout + lint.stderr).decode()
        assert lint.returncode == 0, f"promtool check metrics on the {name}: {out}"
        assert b"scoring_" in body

    # The figures once traffic has flowed for a while (the first ones include the start).
    time.sleep(max(0.0, 12.0 - (time.monotonic() - t0 - seen_after)))
    alive()
    steady = {name: prom.value(q) for name, q in (
        ("throughput", throughput_q), ("p50", p50_q), ("p99", latency_q),
        ("accuracy", accuracy_q), ("labeled", 'scoring_model_labeled_events{window="rolling"}'),
        ("auc", 'scoring_model_roc_auc_ratio{window="rolling"}'),
        ("psi", 'scoring_model_score_psi{window="rolling"}'),
        ("lag", "sum(scoring_consumer_lag_messages)"))}
    assert (steady["throughput"] or 0) > 0, steady
    assert 0 < (steady["p50"] or 0) <= (steady["p99"] or 0) < 5, steady
    assert 0 <= (steady["accuracy"] or -1) <= 1, steady

    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert all(r["health"] == "ok" for r in rules), rules
    firing = [r["name"] for r in rules if r.get("state") == "firing"]
    pending = [r["name"] for r in rules if r.get("state") == "pending"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f} ms"

    report(f"prometheus (first, {seen_after:.1f}s after start): {throughput:.0f} events/s scored,"
           f" latency p50 {ms(latency_p50)} p99 {ms(latency_p99)}, rolling accuracy {acc:.3f}"
           f" over {labeled:.0f} labeled, consumer lag {lag:.0f}")
    fmt = {"throughput": "{:.0f} events/s", "p50": "p50 {}", "p99": "p99 {}",
           "accuracy": "accuracy {:.3f}", "labeled": "{:.0f} labeled", "auc": "ROC AUC {:.3f}",
           "psi": "PSI {:.4f}", "lag": "lag {:.0f}"}
    shown = [fmt[k].format(ms(v) if k in ("p50", "p99") else v) if v is not None else f"{k} -"
             for k, v in steady.items()]
    report(f"prometheus (steady, {time.monotonic() - t0:.1f}s): {', '.join(shown)};"
           f" {len(rules)} rules ok (firing: {', '.join(firing) or 'none'};"
        f" pending: {', '.join(pending) or 'none'}),"
           f" {len(queries)} dashboard queries ok, promtool check metrics ok on both")
