"""Per-feature drift and data quality live, on the real broker: an exactly-once worker
publishing feature statistics and a monitor reading them, one change each.

- A shift in one numeric input (amount ten times larger), confined to one segment (market
  FR), ranks that feature first, and the feature drift alert names it; the gauges and
  /api/features show it. Per segment (/api/features/segments) it ranks first in FR only,
  and a segment feature rule's alert names both the feature and the segment.
- Nulls in one field of a model that refuses them (the demo model): the events are dead
  letters, and still the field's missing rate shows them and the data-quality rule fires.
- A pipeline that imputes: nulls in one field are scored (no dead letter) and raise the
  data-quality alert for that field alone; a category the reference never had, in another
  field, shows as unseen and fires an unseen rule."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from tests.integration.helpers import ROOT, WorkerProc, read_topic
from worker import kafka_io
from worker.devtools.demo import make_events, train_demo
from worker.devtools.demo_run import free_port
from worker.model import write_bundle

UNSEEN_RULES = """
[[feature_alerts]]
name = "feature_missing"
feature = "*"
metric = "missing_rate_delta"
op = ">"
threshold = 0.05

[[feature_alerts]]
name = "feature_unseen"
feature = "*"
metric = "unseen_rate"
op = ">"
threshold = 0.05
"""

SEGMENT_RULES = """
[[feature_alerts]]
name = "feature_drift"
feature = "*"
metric = "psi"
op = ">"
threshold = 0.25

[[feature_alerts]]
name = "segment_feature_drift"
feature = "*"
segment = "*"
metric = "psi"
op = ">"
threshold = 0.25
"""


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return bytes(r.read())


def send(bootstrap: str, topic: str, events: list[dict[str, object]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for e in events:
        p.produce(topic, orjson.dumps(e), str(e["id"]).encode())
        p.poll(0)
    assert p.flush(60) == 0


@dataclass
class Live:
    """A monitor and an exactly-once worker publishing feature statistics, on new topics."""

    bootstrap: str
    topics: dict[str, str]
    port: int
    monitor: subprocess.Popen[bytes]
    worker: WorkerProc
    log: Path

    def monitor_log(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def rolling(self, rows: int, timeout: float = 120) -> dict[str, Any]:
        """The rolling feature window once it holds ``rows`` events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.monitor.poll() is None, self.monitor_log()
            try:
                doc = orjson.loads(get(self.port, "/api/features"))
            except OSError:
                doc = {"windows": []}
            rolling = [w for w in doc["windows"] if w["window"] == "rolling"]
            if rolling and rolling[0]["rows"] == rows:
                return dict(rolling[0])
            time.sleep(0.5)
        raise AssertionError(f"no rolling window of {rows} events\n{self.monitor_log()}")

    def fired(self) -> list[tuple[str, str | None]]:
        """(alert, feature) of every firing alert record so far."""
        return [(a["alert"], a.get("feature")) for a in self.firing()]

    def firing(self) -> list[dict[str, Any]]:
        alerts = [orjson.loads(m.value or b"{}")
                  for m in read_topic(self.bootstrap, self.topics["alerts"], 1, timeout=30,
                                      settle=1)]
        return [a for a in alerts if a["status"] == "firing"]


@pytest.fixture
def live(kafka_bootstrap: str, group_factory: Callable[[], str], tmp_path: Path,
         ) -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def start(model: Path, rules: str | None = None, *worker_args: str) -> Live:
        run = f"fd-{uuid.uuid4().hex[:8]}"
        t = {k: f"{run}-{k}" for k in ("tx", "pred", "dlq", "metrics", "alerts", "stats", "fs")}
        kafka_io.create_topics(kafka_bootstrap, {t["tx"]: 2, t["pred"]: 2, t["dlq"]: 1})
        port, log = free_port(), tmp_path / f"monitor-{run}.log"
        config = []
        if rules is not None:
            (tmp_path / f"{run}.toml").write_text(rules)
            config = ["--config", str(tmp_path / f"{run}.toml")]
        monitor = subprocess.Popen(
            [sys.executable, "-m", "worker", "monitor", "--bootstrap", kafka_bootstrap,
             "--predictions-topic", t["pred"], "--labels-topic", "", "--metrics-topic",
             t["metrics"], "--alerts-topic", t["alerts"], "--stats-topic", t["stats"],
             "--feature-stats-topic", t["fs"], "--models", str(model), "--group",
             group_factory(), "--instance-id", "fd", "--windows", "5m", "--tick-ms", "500",
             "--commit-interval-ms", "200", "--metrics-port", str(port),
             "--state-dir", str(tmp_path / f"state-{run}"), *config],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
        worker = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["tx"],
                             "--output-topic", t["pred"], "--dlq-topic", t["dlq"],
                             "--group", group_factory(), "--model", str(model),
                             "--metrics-port", "0", "--guarantee", "exactly-once",
                             "--instance-id", f"{run}-w", "--feature-stats-topic", t["fs"],
                             "--feature-stats-interval-ms", "1000", *worker_args],
                            tmp_path / f"worker-{run}.log")
        started.append(Live(kafka_bootstrap, t, port, monitor, worker, log))
        return started[-1]

    yield start
    for one in started:
        assert one.worker.stop(signal.SIGTERM) == 0, one.worker.output()[-3000:]
        one.monitor.send_signal(signal.SIGTERM)
        assert one.monitor.wait(60) == 0, one.monitor_log()


def test_a_shifted_feature_ranks_first_and_its_alert_names_it(
    kafka_bootstrap: str, live: Callable[..., Live], tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    run = live(train_demo(tmp_path / "model", n=5000), SEGMENT_RULES,
               "--segment-fields", "market")
    events, _ = make_events(np.random.default_rng(5), 3000, 0, int(time.time() * 1000))
    markets = np.random.default_rng(6).choice(["DE", "IT"], 1500).tolist()
    for e, market in zip(events, [*markets, *["FR"] * 1500], strict=True):
        e["market"] = market
        if market == "FR":  # the shift is confined to FR, and every FR event has it
            e["amount"] = float(e["amount"]) * 10  # type: ignore[arg-type]
    started = time.monotonic()
    send(kafka_bootstrap, run.topics["tx"], events)
    top = run.rolling(3000)["features"][0]
    seen = time.monotonic() - started
    assert top["feature"] == "amount" and top["psi"] > 0.25, top
    # amounts are long-tailed: most of ten times the usual still lie within the reference
    assert top["out_of_range_rate"] > 0.05 and len(top["psi_history"]) >= 1
    doc = orjson.loads(get(run.port, "/api/features/segments"))
    rows = {r["segment"]: r for w in doc["windows"] if w["window"] == "rolling"
            for r in w["rows"]}
    assert sorted(rows) == ["DE", "FR", "IT"] and rows["FR"]["rows"] == 1500, rows
    assert rows["FR"]["features"][0]["feature"] == "amount", rows["FR"]
    assert rows["FR"]["features"][0]["psi"] > 0.25
    for other in ("DE", "IT"):
        amount = next(f for f in rows[other]["features"] if f["feature"] == "amount")
        assert amount["psi"] < 0.1, (other, amount)
    firing = run.firing()
    fired = [(a["alert"], a.get("feature")) for a in firing]
    assert ("feature_drift:amount", "amount") in fired, fired
    assert all(f == "amount" for name, f in fired if name.startswith("feature_drift")), fired
    by_segment = [(a["alert"], a["feature"], a["segment"]) for a in firing if "segment" in a]
    assert by_segment == [("segment_feature_drift:amount@market=FR", "amount",
                           {"field": "market", "value": "FR"})], by_segment
    metrics = get(run.port, "/metrics").decode()
    assert 'scoring_feature_psi{feature="amount",model="fraud-demo",model_version="1",' \
           'window="rolling"}' in metrics
    assert 'scoring_segment_feature_psi{feature="amount",field="market",model="fraud-demo",' \
           'model_version="1",segment="FR",window="rolling"}' in metrics
    report(f"feature drift: amount x10 in market FR (half of 3,000 events) ranked first "
           f"(rolling PSI {top['psi']:.2f}, out of range {top['out_of_range_rate']:.2f}; in "
           f"FR {rows['FR']['features'][0]['psi']:.2f}, first there only) and alerted "
           f"overall and for market=FR; {seen:.1f}s from sending to the monitor's figures")


def by_name(window: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in window["features"]}


def test_nulls_the_model_refuses_are_dead_letters_and_still_raise_the_missing_alert(
    kafka_bootstrap: str, live: Callable[..., Live], tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    run = live(train_demo(tmp_path / "model", n=5000))
    events, _ = make_events(np.random.default_rng(6), 2000, 0, int(time.time() * 1000))
    for e in events[::10] + events[1::10] + events[2::10]:
        e["merchant_risk"] = None  # 30 %: the demo model refuses them
    send(kafka_bootstrap, run.topics["tx"], events)
    figures = by_name(run.rolling(2000))
    dead = read_topic(kafka_bootstrap, run.topics["dlq"], 600, committed_only=True, settle=1)
    assert len(dead) == 600
    assert {(d.headers["dlq.error.kind"], "'merchant_risk'" in d.headers["dlq.error.message"])
            for d in dead} == {("features", True)}
    assert figures["merchant_risk"]["missing_rate"] == 0.3, figures["merchant_risk"]
    assert figures["merchant_risk"]["count"] == 2000
    assert all(f["missing_rate"] == 0.0 for n, f in figures.items() if n != "merchant_risk")
    fired = [f for name, f in run.fired() if name.startswith("feature_missing")]
    assert fired == ["merchant_risk"], fired
    report("data quality, refusing model: merchant_risk null in 600 of 2,000 events: 600 "
           "dead letters, rolling missing rate 0.30, feature_missing:merchant_risk fired alone")


def imputing_bundle(folder: Path) -> Path:
    """A pipeline that imputes a missing amount and ignores unknown countries."""
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame({"amount": rng.lognormal(3.0, 1.0, n),
                          "items": rng.integers(1, 10, n).astype(float),
                          "country": rng.choice(["de", "fr", "it", "es"], n)})
    frame.loc[::20, "amount"] = np.nan  # 5 % missing in the reference: the model imputes
    model = make_pipeline(ColumnTransformer([
        ("num", SimpleImputer(), ["amount", "items"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["country"])]), LogisticRegression())
    model.fit(frame, (rng.random(n) < 0.3).astype(int))
    return write_bundle(folder, model, name="imputing", version="1", task="binary",
                        sample=frame, reference=frame)


def test_an_imputing_pipeline_scores_nulls_and_names_the_field_and_the_unseen_category(
    kafka_bootstrap: str, live: Callable[..., Live], tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    run = live(imputing_bundle(tmp_path / "imputing"), rules=UNSEEN_RULES)
    rng = np.random.default_rng(8)
    events: list[dict[str, object]] = [
        {"id": f"i{i}", "amount": None if i % 10 < 3 else float(rng.lognormal(3.0, 1.0)),
         "items": float(rng.integers(1, 10)),
         "country": "zz" if i % 5 == 4 else str(rng.choice(["de", "fr", "it", "es"]))}
        for i in range(2000)]
    send(kafka_bootstrap, run.topics["tx"], events)
    figures = by_name(run.rolling(2000))
    scored = read_topic(kafka_bootstrap, run.topics["pred"], 2000, committed_only=True,
                        settle=1)
    assert len(scored) == 2000
    # the dead letters would be in the transactions of those predictions: none came
    assert read_topic(kafka_bootstrap, run.topics["dlq"], 1, timeout=3, settle=0,
                      committed_only=True) == []
    assert figures["amount"]["missing_rate"] == 0.3 and figures["amount"]["count"] == 2000
    assert abs(figures["amount"]["missing_rate_delta"] - 0.25) < 1e-9
    assert figures["country"]["unseen_rate"] == 0.2 and figures["country"]["missing_rate"] == 0
    fired = run.fired()
    assert sorted(fired) == [("feature_missing:amount", "amount"),
                             ("feature_unseen:country", "country")], fired
    report("data quality, imputing pipeline: amount null in 30 % of 2,000 events, all scored "
           "(0 dead letters), feature_missing:amount fired; country 'zz' (never in the "
           "reference) in 20 %: unseen rate 0.20, feature_unseen:country fired")
