"""Serving from MLflow, on the real broker and a real ``mlflow server`` (mlflow_server.py).

A scikit-learn pipeline with a string column and missing values is logged and registered,
the alias ``champion`` set, and a worker started with ``--model models:/fraud@champion``:
its scores are the pipeline's own ``predict_proba``. Under a stream, the alias moves to
v2 (each partition switches once, in order), then to a v3 logged without an input example
(refused, announced on the alerts topic, v2 keeps serving); the tracking server is
stopped (the worker keeps serving, /readyz 200, one warning) and started again, and the
alias moved back to v1 is followed. Not one event is lost.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer

from tests.integration.helpers import WorkerProc, free_ports, read_topic, same_scores, wait_for
from tests.integration.mlflow_server import MlflowServer, mlflow_server
from tests.integration.test_model_reload import PARTITIONS, Collector

__all__ = ["mlflow_server"]  # the fixture, used by name
mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.integration
TopicFactory = Callable[..., str]
NAME = "fraud"
RATE = 1_000  # events per second
COUNTRIES = ("fr", "de", "us", "gb")


def frame(seed: int, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Transactions with a string column and missing values in both columns."""
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 40.0, n)
    country = rng.choice(COUNTRIES, n).astype(object)
    y = ((amount > 90) ^ (country == "us") ^ (rng.random(n) < 0.1)).astype(int)
    amount[rng.random(n) < 0.1] = np.nan
    country[rng.random(n) < 0.1] = None
    return pd.DataFrame({"amount": amount, "country": country}), y


def pipeline(seed: int) -> Any:
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    strings = make_pipeline(SimpleImputer(strategy="constant", fill_value="none"),
                            OneHotEncoder(handle_unknown="ignore"))
    prep = make_column_transformer((SimpleImputer(), ["amount"]), (strings, ["country"]))
    x, y = frame(seed, 2_000)
    return make_pipeline(prep, LogisticRegression(C=1.0 / seed)).fit(x, y)


def log_version(uri: str, pipe: Any, example: bool) -> str:
    """Log and register ``pipe`` as a new version of NAME (with an input example or not)."""
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(uri)
    x, _ = frame(99, 200)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe, name="model", signature=infer_signature(x, pipe.predict_proba(x)),
            input_example=x.iloc[:40] if example else None, registered_model_name=NAME,
            skops_trusted_types=["numpy.dtype"])
    return str(info.registered_model_version)


def set_alias(uri: str, version: str) -> None:
    mlflow.MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", version)


def events(start: int, n: int) -> list[dict[str, Any]]:
    x, _ = frame(1_000 + start, n)
    out = []
    for i, (amount, country) in enumerate(zip(x["amount"], x["country"], strict=True)):
        e: dict[str, Any] = {"id": f"e{start + i}"}
        if not np.isnan(amount):
            e["amount"] = float(amount)
        e["country"] = None if country is None or country != country else country
        out.append(e)
    return out


class Feeder(threading.Thread):
    """Streams events at RATE until stopped; remembers what it sent."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.sent: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        t0 = time.monotonic()
        while not self.halt.is_set():
            chunk = events(len(self.sent), 100)
            for e in chunk:
                p.produce(self.topic, orjson.dumps(e), e["id"].encode())
            self.sent += chunk
            p.poll(0)
            time.sleep(max(0.0, t0 + len(self.sent) / RATE - time.monotonic()))
        assert p.flush(60) == 0


@pytest.fixture(scope="module")
def versions(mlflow_server: MlflowServer) -> dict[str, Any]:
    pipes = {"1": pipeline(1), "2": pipeline(3)}
    for v, pipe in pipes.items():
        assert log_version(mlflow_server.uri, pipe, example=True) == v
    set_alias(mlflow_server.uri, "1")
    return pipes


@pytest.fixture
def worker(
    kafka_bootstrap: str, group_factory: Callable[[], str], mlflow_server: MlflowServer,
    tmp_path: Path,
) -> Iterator[Callable[..., Any]]:
    started: list[WorkerProc] = []

    def start(topics: dict[str, str], metrics_port: int = 0) -> WorkerProc:
        w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", topics["in"],
                        "--output-topic", topics["out"], "--dlq-topic", topics["dlq"],
                        "--alerts-topic", topics["alerts"], "--group", group_factory(),
                        "--model", f"models:/{NAME}@champion",
                        "--mlflow-tracking-uri", mlflow_server.uri,
                        "--mlflow-cache", str(tmp_path / "cache"), "--mlflow-poll-ms", "300",
                        "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
                        "--batch-max", "200"], tmp_path / "worker.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def topics(topic_factory: TopicFactory) -> dict[str, str]:
    return {"in": topic_factory("in", PARTITIONS), "out": topic_factory("out", PARTITIONS),
            "dlq": topic_factory("dlq", 1), "alerts": topic_factory("alerts", 1)}


def test_parity_with_the_pipelines_own_predict_proba(
    kafka_bootstrap: str, topic_factory: TopicFactory, versions: dict[str, Any],
    worker: Callable[..., WorkerProc],
) -> None:
    t = topics(topic_factory)
    sent = events(0, 2_000)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for e in sent:
        p.produce(t["in"], orjson.dumps(e), e["id"].encode())
    assert p.flush(30) == 0
    w = worker(t)
    got = read_topic(kafka_bootstrap, t["out"], len(sent), settle=0.5)
    assert w.stop() == 0, w.output()[-3000:]
    records = [orjson.loads(o.value or b"") for o in got]
    assert {r["model_version"] for r in records} == {"1"}
    assert {r["model"] for r in records} == {NAME}
    x = pd.DataFrame({"amount": [e.get("amount", np.nan) for e in sent],
                      "country": [e["country"] for e in sent]})
    own = versions["1"].predict_proba(x)[:, 1]
    assert x["amount"].isna().any() and x["country"].isna().any()
    expected = {e["id"]: float(s) for e, s in zip(sent, own, strict=True)}
    assert same_scores({r["id"]: r["score"] for r in records}, expected)
    assert read_topic(kafka_bootstrap, t["dlq"], 0, settle=0.5) == []


def test_a_version_without_input_example_takes_its_runs_logged_sample(
    versions: dict[str, Any], mlflow_server: MlflowServer, tmp_path: Path,
) -> None:
    from mlflow.models import infer_signature

    from worker.config import Settings
    from worker.context import build_context

    pipe, (x, _) = pipeline(7), frame(98, 200)
    mlflow.set_tracking_uri(mlflow_server.uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipe, name="model", signature=infer_signature(x, pipe.predict_proba(x)),
            registered_model_name=NAME, skops_trusted_types=["numpy.dtype"])
        mlflow.log_table(x.iloc[:50], "scoring-sample.json")
    version = str(info.registered_model_version)
    ctx = build_context(Settings(model=f"models:/{NAME}/{version}", mlflow_cache=str(tmp_path),
                                 mlflow_tracking_uri=mlflow_server.uri))
    man = ctx.bundle.manifest
    assert (man.name, man.version) == (NAME, version)
    assert man.self_test is not None and len(man.self_test.events) == 50
    assert [f.type for f in man.feature_specs] == ["number", "string"]
    assert man.lineage is not None and man.lineage["mlflow"]["model_uri"].endswith(version)


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return int(r.status)
    except OSError:
        return 0


def log_lines(w: WorkerProc) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in w.output().splitlines() if line.startswith("{")]


def swapped_to(w: WorkerProc, version: str) -> Callable[[], bool]:
    return lambda: any(r.get("msg") == "model reloaded" and r.get("model_version") == version
                       for r in log_lines(w))


def test_alias_moves_refusal_and_outage_under_a_stream(
    kafka_bootstrap: str, topic_factory: TopicFactory, versions: dict[str, Any],
    worker: Callable[..., WorkerProc], mlflow_server: MlflowServer,
    report: Callable[[str], None],
) -> None:
    t = topics(topic_factory)
    port = free_ports(1)
    w = worker(t, metrics_port=port)
    feeder, out = Feeder(kafka_bootstrap, t["in"]), Collector(kafka_bootstrap, t["out"])
    feeder.start()
    out.start()
    uri = mlflow_server.uri
    try:
        wait_for(out.all_partitions(["1"]), 90, "v1 predictions on every partition")
        set_alias(uri, "2")
        wait_for(out.all_partitions(["1", "2"]), 60, "v2 predictions on every partition")
        v3 = log_version(uri, pipeline(5), example=False)  # nothing to self-test it with
        set_alias(uri, v3)
        alerts = read_topic(kafka_bootstrap, t["alerts"], 1, settle=0.5)
        went_down = time.monotonic()
        mlflow_server.stop()
        scored = len(out.ids)
        down: list[int] = []
        for _ in range(20):  # 10 s without a tracking server
            down.append(readyz(port))
            time.sleep(0.5)
        assert len(out.ids) > scored, "predictions stopped while MLflow was down"
        mlflow_server.start()  # a minute or more on a busy machine: the outage lasts that long
        outage_s = time.monotonic() - went_down
        set_alias(uri, "1")
        wait_for(out.all_partitions(["1", "2", "1"]), 60, "v1 again on every partition")
        feeder.halt.set()
        feeder.join()
        wait_for(lambda: len(out.ids) >= len(feeder.sent), 90, "every prediction")
        time.sleep(2.0)  # room for duplicates to show up, if there were any
        dead = read_topic(kafka_bootstrap, t["dlq"], 0, settle=0.5)
    finally:
        feeder.halt.set()
        out.done.set()
        assert w.stop() == 0, w.output()[-3000:]
    assert set(down) == {200}, down
    refusal = orjson.loads(alerts[0].value or b"")
    assert refusal["alert"] == "model_refused" and refusal["model_version"] == v3
    assert "input_example" in refusal["reason"] and refusal["source"] == "mlflow"
    lines = log_lines(w)
    outage = [r for r in lines if str(r.get("msg", "")).startswith("cannot follow")]
    # One warning a minute of outage: from the stop until the server answered again.
    assert 1 <= len(outage) <= 1 + int(outage_s // 60), (outage_s, outage)
    assert any("answers again" in str(r.get("msg", "")) for r in lines)
    assert sorted(out.ids) == sorted(e["id"] for e in feeder.sent)  # none lost, none twice
    assert dead == []
    for p in range(PARTITIONS):
        assert out.versions(p) == ["1", "2", "1"], (p, out.versions(p))
    report(f"MLflow alias: {len(feeder.sent)} events through v1 -> v2 -> (v{v3} refused, "
           "tracking server down 10 s) -> v1, none lost")
