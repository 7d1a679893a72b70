"""The monitor against the real broker: exact window figures, kill -9, two instances."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression

from tests.integration import feature_feed
from tests.integration.helpers import ROOT, produce, read_topic
from worker.devtools.demo_run import free_port
from worker.model import load_bundle, write_bundle
from worker.model.calibration import Calibration

N = 50_000
FIVE_MIN = 300_000
HORIZON_S = 20
# maturity: label ages are the labels' Kafka times (when each test produced them) after the
# windows' fixed ends, so two tests minutes apart may bin them differently; its last point is
# checked against coverage in check_against_sklearn.
VOLATILE = ("computed_at", "sources", "maturity")


@dataclass(frozen=True)
class Dataset:
    predictions: list[dict[str, Any]]
    labels: dict[str, int]  # id -> true label, for the labels that arrive
    early: list[str]  # ids whose label is sent before any prediction
    late: list[str]  # the other arriving labels, shuffled
    unknown: list[str]  # labels for ids that were never predicted


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle for version 1 with a calibration map, so that its windows carry estimated
    figures (est_*), which must be as exact across kill -9 and instances as the rest."""
    rng = np.random.default_rng(9)
    x = rng.normal(0, 1, (4000, 2))
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(int)
    model = LogisticRegression().fit(x[:2000], y[:2000])
    return write_bundle(tmp_path_factory.mktemp("bundle") / "fraud-test-1", model,
                        name="fraud-test", version="1", task="binary", features=["a", "b"],
                        sample=x[2000:], reference=x[2000:],
                        reference_labels=y[2000:])


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(42)
    now = int(time.time() * 1000)
    base = (now - 40 * 60_000) // FIVE_MIN * FIVE_MIN  # 4 five-minute windows, 40-20 min ago
    truth = (rng.random(N) < 0.2).astype(int)
    score = np.clip(rng.beta(2, 5, N) + 0.35 * truth, 0.0, 1.0)
    score[:20] = [0.0, 1.0] * 10  # the edges of log loss
    preds = []
    for i in range(N):
        version = "1" if i % 3 else "2"
        p = float(score[i])
        event_ts = base + int(rng.integers(0, 4 * FIVE_MIN))
        preds.append({"id": f"ev-{i}", "score": p, "label": int(p >= 0.5),
                      "model": "fraud-test", "model_version": version, "event_ts": event_ts,
                      "scored_at": now})
    order = rng.permutation(N)
    never = set(order[: N // 50].tolist())  # 2 % never labeled
    arriving = [i for i in order.tolist() if i not in never]
    early = arriving[: N // 20]  # 5 % before their prediction
    late = arriving[N // 20 :]
    unknown = [f"ghost-{k}" for k in range(N // 100)]  # 1 % for ids never predicted
    return Dataset(preds, {f"ev-{i}": int(truth[i]) for i in arriving},
                   [f"ev-{i}" for i in early], [f"ev-{i}" for i in late], unknown)


def expected(ds: Dataset) -> dict[str, dict[str, Any]]:
    """sklearn's figures per (version, window size, window start)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in ds.predictions:
        for window, size in (("5m", FIVE_MIN), ("1h", 3_600_000)):
            start = p["event_ts"] - p["event_ts"] % size
            groups.setdefault(f"fraud-test|{p['model_version']}|{window}|{start}", []).append(p)
    out = {}
    for key, preds in groups.items():
        labeled = [p for p in preds if p["id"] in ds.labels]
        y = np.array([ds.labels[p["id"]] for p in labeled])
        s = np.array([p["score"] for p in labeled])
        d = np.array([p["label"] for p in labeled])
        out[key] = {"count": len(labeled), "predicted": len(preds), "scores": preds,
                    "expired": len(preds) - len(labeled), "positives": int(y.sum()),
                    "accuracy": skm.accuracy_score(y, d), "precision": skm.precision_score(y, d),
                    "recall": skm.recall_score(y, d), "f1": skm.f1_score(y, d),
                    "log_loss": skm.log_loss(y, s, labels=[0, 1]),
                    "brier": skm.brier_score_loss(y, s),
                    "roc_auc": skm.roc_auc_score(y, s)}
    return out


class MonitorProc:
    def __init__(self, bootstrap: str, topics: dict[str, str], group: str, instance: str,
                 log: Path, models: Path | None = None, features: Path | None = None,
                 port: int = 0, extra: Sequence[str] = ()) -> None:
        """``features``: a bundle with a profile, and the feature statistics topic."""
        self.log = log.open("ab")
        args = ["--bootstrap", bootstrap, "--predictions-topic", topics["pred"],
                "--labels-topic", topics["labels"], "--metrics-topic", topics["metrics"],
                "--alerts-topic", topics["alerts"], "--stats-topic", topics["stats"],
                "--group", group, "--instance-id", instance, "--horizon-s", str(HORIZON_S),
                "--metrics-port", str(port), "--partitions", "4"]
        if models is not None:
            args += ["--models", ",".join(str(m) for m in (models, features) if m)]
        if features is not None:
            args += ["--feature-stats-topic", topics["fs"], "--tick-ms", "500"]
        args += extra
        cmd = [sys.executable, "-m", "worker", "monitor", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.log.close()
        return code


def feed(bootstrap: str, topics: dict[str, str], ds: Dataset) -> None:
    lab = topics["labels"]
    produce(bootstrap, lab, ((i.encode(), orjson.dumps({"id": i, "label": ds.labels[i]}))
                             for i in ds.early))
    produce(bootstrap, topics["pred"], ((f"card-{k % 977}".encode(), orjson.dumps(p))
                                        for k, p in enumerate(ds.predictions)))
    rest = [(i, ds.labels[i]) for i in ds.late] + [(g, 1) for g in ds.unknown]
    order = np.random.default_rng(7).permutation(len(rest))
    produce(bootstrap, lab, ((rest[k][0].encode(), orjson.dumps({"id": rest[k][0],
                                                                 "label": rest[k][1]}))
                             for k in order.tolist()))


def final_stats(bootstrap: str, topic: str) -> dict[str, Any]:
    records = read_topic(bootstrap, topic, 1, timeout=5, settle=1.0)
    if not records:
        return {}
    latest = orjson.loads(records[-1].value or b"{}")
    schema("join_stats.schema.json").validate(latest)
    return dict(latest)


def wait_done(bootstrap: str, topics: dict[str, str], ds: Dataset, timeout: float) -> None:
    want = {"joined": len(ds.labels), "expired_predictions": N - len(ds.labels),
            "unmatched_labels": len(ds.unknown)}
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = final_stats(bootstrap, topics["stats"])
        if all(stats.get(k) == v for k, v in want.items()):
            time.sleep(3)  # let the last partials reach stage two and the metrics topic
            return
        time.sleep(2)
    raise AssertionError(f"monitor did not finish: last stats {stats}, want {want}")


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads((ROOT / "schemas" / name).read_bytes()))


def final_windows(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """The latest record per window key (what a compacted topic keeps), each validated."""
    latest: dict[str, dict[str, Any]] = {}
    check = schema("model_metrics.schema.json")
    for r in read_topic(bootstrap, topic, 1, timeout=10, settle=2.0):
        key = (r.key or b"").decode()
        record = orjson.loads(r.value or b"{}")
        check.validate(record)
        if not key.endswith("|rolling"):
            latest[key] = record
    return latest


def check_against_sklearn(got: dict[str, dict[str, Any]], ds: Dataset,
                          calibration: Calibration) -> None:
    want = expected(ds)
    assert set(got) == set(want)
    assert len({k.split("|")[3] for k in want if "|5m|" in k}) >= 3
    for key, w in want.items():
        g = got[key]
        for name in ("count", "predicted", "expired", "positives"):
            assert g[name] == w[name], (key, name)
        for name in ("accuracy", "precision", "recall", "f1", "log_loss", "brier"):
            assert abs(g[name] - w[name]) <= 1e-9, (key, name, g[name], w[name])
        assert abs(g["roc_auc"] - w["roc_auc"]) <= 1e-3, (key, g["roc_auc"], w["roc_auc"])
        # Version 1 has a calibration map: estimated over every prediction of the window.
        assert (g["est_recall"] is not None) == (key.split("|")[1] == "1"), key
        if g["est_recall"] is not None:
            for name, value in direct_estimates(w["scores"], calibration).items():
                assert abs(g[name] - value) <= 1e-9, (key, name, g[name], value)
        assert g["maturity"][-1]["coverage"] == g["coverage"], key


def direct_estimates(preds: list[dict[str, Any]], cal: Calibration) -> dict[str, float]:
    """CBPE's expected confusion at the threshold, straight from the scores and the map."""
    s = np.array([p["score"] for p in preds])
    c = np.asarray(cal.rates)[np.searchsorted(cal.cuts, s, side="right")]
    d = np.array([p["label"] == 1 for p in preds])
    tp, pos, alerts, n = math.fsum(c[d]), math.fsum(c), int(d.sum()), len(s)
    tn = n - alerts - (pos - tp)
    return {"est_positives": pos, "est_alert_rate": alerts / n, "est_precision": tp / alerts,
            "est_recall": tp / pos, "est_f1": 2 * tp / (alerts + pos),
            "est_accuracy": (tp + tn) / n}


def calibration_of(bundle: Path) -> Calibration:
    cal = load_bundle(bundle).manifest.calibration
    assert cal is not None
    return cal


def stable(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in r.items() if f not in VOLATILE} for k, r in records.items()}


Topics = Callable[..., str]
UNINTERRUPTED: dict[str, dict[str, Any]] = {}


def make_topics(topic_factory: Topics) -> dict[str, str]:
    return {"pred": topic_factory("pred", 4), "labels": topic_factory("labels", 4),
            "metrics": topic_factory("metrics", 1), "alerts": topic_factory("alerts", 1),
            "stats": topic_factory("stats", 1)}


def test_windows_equal_sklearn_with_late_early_missing_and_unknown_labels(
    kafka_bootstrap: str, topic_factory: Topics, group_factory: Callable[[], str],
    dataset: Dataset, tmp_path: Path, calibrated: Path,
) -> None:
    topics = make_topics(topic_factory)
    mon = MonitorProc(kafka_bootstrap, topics, group_factory(), "solo", tmp_path / "m.log",
                      models=calibrated)
    try:
        feed(kafka_bootstrap, topics, dataset)
        wait_done(kafka_bootstrap, topics, dataset, timeout=240)
        got = final_windows(kafka_bootstrap, topics["metrics"])
    finally:
        assert mon.stop() == 0, (tmp_path / "m.log").read_text()[-3000:]
    check_against_sklearn(got, dataset, calibration_of(calibrated))
    UNINTERRUPTED.update(stable(got))


def test_kill9_mid_stream_then_restart_gives_the_same_figures(
    kafka_bootstrap: str, topic_factory: Topics, group_factory: Callable[[], str],
    dataset: Dataset, tmp_path: Path, calibrated: Path, report: Callable[[str], None],
) -> None:
    """The accuracy windows, and the feature windows of statistics published meanwhile by
    exactly-once "workers" (one transaction a record, every 7th aborted): after the kill
    every window's counts equal a numpy recount, PSI and JS a reference to 1e-9, and the
    feature drift alert fired once (its state was restored, not fired again)."""
    topics, group = make_topics(topic_factory), group_factory()
    topics["fs"] = topic_factory("fs", 2)
    profiled = feature_feed.profiled_bundle(tmp_path / "profiled")
    stats = feature_feed.StatsFeed.make(profiled, int(time.time() * 1000))
    first = MonitorProc(kafka_bootstrap, topics, group, "one", tmp_path / "first.log",
                        calibrated, profiled)
    stats.send(kafka_bootstrap, topics["fs"], seconds=12)
    feed(kafka_bootstrap, topics, dataset)
    deadline = time.monotonic() + 120
    while final_stats(kafka_bootstrap, topics["stats"]).get("joined", 0) < 10_000:
        assert time.monotonic() < deadline, "the monitor made no progress"
        time.sleep(0.5)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    mid_stream = not stats.done.is_set()
    port = free_port()
    second = MonitorProc(kafka_bootstrap, topics, group, "one", tmp_path / "second.log",
                         calibrated, profiled, port=port)
    try:
        wait_done(kafka_bootstrap, topics, dataset, timeout=240)
        got = final_windows(kafka_bootstrap, topics["metrics"])
        assert stats.done.wait(60)
        doc = feature_windows(port, len(stats.committed(0, 2**62)))
    finally:
        assert second.stop() == 0
    check_against_sklearn(got, dataset, calibration_of(calibrated))
    if UNINTERRUPTED:
        assert stable(got) == UNINTERRUPTED
    profile = load_bundle(profiled).manifest.profile
    assert profile is not None
    checked = feature_feed.check_windows(doc, stats, profile)
    alerts = [orjson.loads(m.value or b"{}") for m in read_topic(
        kafka_bootstrap, topics["alerts"], 1, timeout=10, settle=1, committed_only=True)]
    drift = [a for a in alerts if a["alert"] == "feature_drift:amount"]
    assert [a["status"] for a in drift] == ["firing"], drift
    report(f"monitor kill -9 {'while' if mid_stream else 'after'} statistics were published: "
           f"{checked} feature windows equal the numpy recount, PSI/JS within 1e-9; "
           f"feature_drift:amount fired once across the restart")


def feature_windows(port: int, rows: int, timeout: float = 60) -> dict[str, Any]:
    """/api/features once the rolling window of the profiled model holds ``rows`` events."""
    deadline, doc = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{port}/api/features"
            with urllib.request.urlopen(url, timeout=5) as r:
                doc = orjson.loads(r.read())
        except OSError:
            doc = {}
        rolling = [w for w in doc.get("windows", []) if w["window"] == "rolling"
                   and w["model"] == feature_feed.MODEL]
        if rolling and rolling[0]["rows"] == rows:
            return dict(doc)
        time.sleep(0.5)
    raise AssertionError(f"no rolling feature window of {rows} events: {doc}")


def test_two_instances_give_the_same_figures_as_one(
    kafka_bootstrap: str, topic_factory: Topics, group_factory: Callable[[], str],
    dataset: Dataset, tmp_path: Path, calibrated: Path,
) -> None:
    """The second instance joins mid-stream: the rebalance moves partitions (and their
    state) while transactions are in flight, and the figures must not notice."""
    topics, group = make_topics(topic_factory), group_factory()
    a = MonitorProc(kafka_bootstrap, topics, group, "a", tmp_path / "a.log", calibrated)
    b = None
    try:
        feed(kafka_bootstrap, topics, dataset)
        deadline = time.monotonic() + 120
        while final_stats(kafka_bootstrap, topics["stats"]).get("joined", 0) < 5_000:
            assert time.monotonic() < deadline, "the monitor made no progress"
            time.sleep(0.5)
        b = MonitorProc(kafka_bootstrap, topics, group, "b", tmp_path / "b.log", calibrated)
        wait_done(kafka_bootstrap, topics, dataset, timeout=240)
        got = final_windows(kafka_bootstrap, topics["metrics"])
    finally:
        codes = (a.stop(), b.stop() if b is not None else 0)
    assert codes == (0, 0), (tmp_path / "a.log").read_text()[-3000:]
    assert "assigned" in (tmp_path / "b.log").read_text()  # b did take partitions
    check_against_sklearn(got, dataset, calibration_of(calibrated))
    if UNINTERRUPTED:
        assert stable(got) == UNINTERRUPTED


def test_predictions_carrying_their_own_label_join_without_a_labels_topic(
    kafka_bootstrap: str, topic_factory: Topics, group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    topics = make_topics(topic_factory)
    rng = np.random.default_rng(3)
    now = int(time.time() * 1000)
    start = (now - 20 * 60_000) // FIVE_MIN * FIVE_MIN
    scores = rng.random(2000)
    preds = [{"id": f"r-{i}", "score": float(s), "label": int(s >= 0.5), "model": "replay",
              "model_version": "7", "event_ts": start + i, "scored_at": now,
              "true_label": int(rng.random() < s)} for i, s in enumerate(scores)]
    produce(kafka_bootstrap, topics["pred"], ((None, orjson.dumps(p)) for p in preds))
    topics["labels"] = ""  # no labels topic at all
    mon = MonitorProc(kafka_bootstrap, topics, group_factory(), "replay", tmp_path / "m.log")
    try:
        deadline = time.monotonic() + 120
        record: dict[str, Any] = {}
        key = f"replay|7|5m|{start}"
        while time.monotonic() < deadline and record.get("count") != 2000:
            record = final_windows(kafka_bootstrap, topics["metrics"]).get(key, {})
    finally:
        assert mon.stop() == 0, (tmp_path / "m.log").read_text()[-2000:]
    y = [p["true_label"] for p in preds]
    d = [p["label"] for p in preds]
    assert record["count"] == 2000 and record["expired"] == 0
    assert abs(record["accuracy"] - skm.accuracy_score(y, d)) <= 1e-12
