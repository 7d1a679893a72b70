"""Estimated performance on the real broker (issue 23): estimates made before any label
against the figures realized once every label came, under covariate shift and under
concept drift (the gap rule), and label maturity over an accelerated week."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sklearn.linear_model import LogisticRegression

from tests.integration.helpers import ROOT, produce, read_topic
from worker.devtools.demo_run import free_port
from worker.model import write_bundle

N = 20_000  # predictions per window
FIVE_MIN = 300_000
DAY = 86_400_000
THRESHOLD = 0.4
TOLERANCE = 0.03  # absolute, on recall and precision (the aim)
NAME, VERSION = "est-test", "1"
FEATURES = ["x0", "x1", "x2"]
Topics = Callable[..., str]


def sample(rng: np.random.Generator, n: int, *, risky: float = 0.0,
           concept: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (``risky`` moves x0 up: more risky transactions) and outcomes from one fixed
    relation; ``concept`` adds a pattern the model never saw (low x2 turns fraudulent)."""
    x = np.column_stack([rng.normal(risky, 1.0, n), rng.normal(0, 1, n), rng.normal(0, 1, n)])
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] - 2.5
    if concept:
        logit = logit + 4.0 * (x[:, 2] < -0.8)
    return x, (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)


def bundle(folder: Path) -> tuple[Path, LogisticRegression]:
    rng = np.random.default_rng(1)
    x, y = sample(rng, 40_000)
    model = LogisticRegression().fit(x[:20_000], y[:20_000])
    path = write_bundle(folder, model, name=NAME, version=VERSION, task="binary",
                        features=FEATURES, sample=x[20_000:], threshold=THRESHOLD,
                        reference=x[20_000:], reference_labels=y[20_000:])
    return path, model


class Monitor:
    def __init__(self, bootstrap: str, topics: dict[str, str], group: str, models: Path,
                 config: Path, windows: str, log: Path,
                 horizon_s: float = 86_400, port: int = 0) -> None:
        self.log = log.open("ab")
        self.path = log
        cmd = [sys.executable, "-m", "worker", "monitor", "--bootstrap", bootstrap,
               "--predictions-topic", topics["pred"], "--labels-topic", topics["labels"],
               "--metrics-topic", topics["metrics"], "--alerts-topic", topics["alerts"],
               "--stats-topic", topics["stats"], "--group", group, "--instance-id", "est",
               "--models", str(models), "--config", str(config), "--windows", windows,
               "--tick-ms", "500", "--horizon-s", str(horizon_s), "--metrics-port", str(port),
               "--partitions", "2"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def kill(self) -> int:
        self.proc.kill()
        code = self.proc.wait(60)
        self.log.close()
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.log.close()
        return code


def make_topics(topic_factory: Topics) -> dict[str, str]:
    return {"pred": topic_factory("pred", 2), "labels": topic_factory("labels", 2),
            "metrics": topic_factory("metrics", 1), "alerts": topic_factory("alerts", 1),
            "stats": topic_factory("stats", 1)}


def predictions(model: LogisticRegression, x: np.ndarray, start_ms: int, size_ms: int,
                first_id: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    scores = model.predict_proba(x)[:, 1].tolist()
    times = (start_ms + rng.integers(0, size_ms, len(scores))).tolist()
    now = int(time.time() * 1000)
    return [{"id": f"e-{first_id + i}", "score": s, "label": int(s >= THRESHOLD), "model": NAME,
             "model_version": VERSION, "event_ts": t, "scored_at": now}
            for i, (s, t) in enumerate(zip(scores, times, strict=True))]


def send_predictions(bootstrap: str, topic: str, preds: list[dict[str, Any]]) -> None:
    produce(bootstrap, topic, ((p["id"].encode(), orjson.dumps(p)) for p in preds))


def send_labels(bootstrap: str, topic: str, labels: list[tuple[str, int, int | None]]) -> None:
    produce(bootstrap, topic, ((i.encode(), orjson.dumps(
        {"id": i, "label": y} if ts is None else {"id": i, "label": y, "ts": ts}))
        for i, y, ts in labels))


def latest_windows(bootstrap: str, topics: str | list[str], size: str
                   ) -> dict[int, dict[str, Any]]:
    """The latest model-metrics record of each closed window of ``size``, by start (of
    several topics, the later one's records are the later ones)."""
    out: dict[int, dict[str, Any]] = {}
    for topic in [topics] if isinstance(topics, str) else topics:
        for r in read_topic(bootstrap, topic, 1, timeout=5, settle=1.0):
            rec = orjson.loads(r.value or b"{}")
            if rec.get("window") == size:
                out[int(rec["window_start"])] = rec
    return out


def wait_windows(bootstrap: str, topic: str | list[str], size: str,
                 done: Callable[[dict[int, Any]], bool], what: str, timeout: float = 180
                 ) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    got: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        got = latest_windows(bootstrap, topic, size)
        if done(got):
            return got
        time.sleep(1)
    seen = [(s, r["predicted"], r["count"]) for s, r in sorted(got.items())]
    raise AssertionError(f"{what}: last records (start, predicted, count) {seen}")


def alerts(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value or b"{}")
            for r in read_topic(bootstrap, topic, 1, timeout=3, settle=1.0)]


GAP_RULE = """
[[alerts]]
name = "concept_gap"
metric = "est_gap_recall"
op = "<"
threshold = -0.1
window = "5m"
min_count = 1000
min_coverage = 0.8
cooldown_s = 3600
"""


def test_estimates_before_labels_match_realized_figures_and_the_gap_sees_concept_drift(
    kafka_bootstrap: str, topic_factory: Topics, group_factory: Callable[[], str],
    tmp_path: Path, report: Callable[[str], None],
) -> None:
    path, model = bundle(tmp_path / "model")
    config = tmp_path / "monitor.toml"
    config.write_text(GAP_RULE)
    topics = make_topics(topic_factory)
    rng = np.random.default_rng(2)
    now = int(time.time() * 1000)
    base = (now - 30 * 60_000) // FIVE_MIN * FIVE_MIN  # three closed windows, 30-15 min ago
    starts = {"base": base, "shifted": base + FIVE_MIN, "concept": base + 2 * FIVE_MIN}
    data = {"base": sample(rng, N), "shifted": sample(rng, N, risky=1.0),
            "concept": sample(rng, N, concept=True)}
    preds = {k: predictions(model, data[k][0], starts[k], FIVE_MIN, j * N, rng)
             for j, k in enumerate(data)}
    mon = Monitor(kafka_bootstrap, topics, group_factory(), path, config, "5m",
                  tmp_path / "m.log")
    try:
        for k in data:
            send_predictions(kafka_bootstrap, topics["pred"], preds[k])
        before = wait_windows(
            kafka_bootstrap, topics["metrics"], "5m",
            lambda g: all(g.get(s, {}).get("predicted") == N for s in starts.values()),
            "the predictions did not all reach their windows")
        assert all(before[s]["count"] == 0 for s in starts.values())  # no label yet
        labels = {k: [(p["id"], int(y), None) for p, y in zip(preds[k], data[k][1], strict=True)]
                  for k in data}
        send_labels(kafka_bootstrap, topics["labels"],
                    labels["base"] + labels["shifted"] + labels["concept"][: N // 2])
        half = wait_windows(
            kafka_bootstrap, topics["metrics"], "5m",
            lambda g: all(g.get(starts[k], {}).get("count") == n for k, n in
                          (("base", N), ("shifted", N), ("concept", N // 2))),
            "the first labels were not all joined")
        time.sleep(3)  # a few ticks: the gap rule evaluates the half-labeled window
        assert [a for a in alerts(kafka_bootstrap, topics["alerts"])
                if a.get("alert") == "concept_gap"] == []
        send_labels(kafka_bootstrap, topics["labels"], labels["concept"][N // 2:])
        after = wait_windows(
            kafka_bootstrap, topics["metrics"], "5m",
            lambda g: all(g.get(s, {}).get("count") == N for s in starts.values()),
            "the labels were not all joined")
        deadline = time.monotonic() + 30
        fired: list[dict[str, Any]] = []
        while not fired and time.monotonic() < deadline:
            fired = [a for a in alerts(kafka_bootstrap, topics["alerts"])
                     if a.get("alert") == "concept_gap"]
    finally:
        assert mon.stop() == 0, (tmp_path / "m.log").read_text()[-3000:]
    lines = []
    for k, s in starts.items():
        est, real = before[s], after[s]
        line = f"{k}: " + ", ".join(
            f"{m} est {est[f'est_{m}']:.4f} realized {real[m]:.4f}"
            for m in ("recall", "precision", "f1", "accuracy", "roc_auc"))
        lines.append(line)
        report(f"estimates ({N} events per window) {line}")
    text = "\n".join(lines)
    for k in ("base", "shifted"):
        est, real = before[starts[k]], after[starts[k]]
        for m in ("recall", "precision"):
            assert abs(est[f"est_{m}"] - real[m]) <= TOLERANCE, (k, m, text)
        assert abs(est["est_roc_auc"] - real["roc_auc"]) <= TOLERANCE, (k, text)
    # Covariate shift moved the realized figures, and the estimates followed them.
    b, sh = after[starts["base"]], after[starts["shifted"]]
    assert abs(sh["recall"] - b["recall"]) > 2 * TOLERANCE, text
    assert abs(sh["precision"] - b["precision"]) > 2 * TOLERANCE, text
    # Concept drift: the estimate cannot see it; the gap can, once the labels are in.
    c = after[starts["concept"]]
    assert c["recall"] < before[starts["concept"]]["est_recall"] - 0.1, text
    assert half[starts["concept"]]["coverage"] == 0.5
    # Half-labeled, the gap was already past the threshold: min_coverage kept the rule quiet.
    assert half[starts["concept"]]["est_gap_recall"] < -0.1, text
    assert len(fired) == 1 and fired[0]["status"] == "firing", fired
    assert fired[0]["value"] < -0.1 and fired[0]["basis_count"] >= 0.8 * N
    report(f"estimates: concept drift gap {c['est_gap_recall']:.4f} fired at coverage "
           f"{fired[0]['basis_count'] / N:.2f}")


COVERAGE_RULE = """
[[alerts]]
name = "recall_when_labeled"
metric = "recall"
op = "<"
threshold = 1.01
window = "1d"
min_count = 100
min_coverage = 0.9
cooldown_s = 3600
"""


def test_label_maturity_rises_over_an_accelerated_week_and_min_coverage_waits(
    kafka_bootstrap: str, topic_factory: Topics, group_factory: Callable[[], str],
    tmp_path: Path, report: Callable[[str], None],
) -> None:
    """A week of traffic (event times over the last seven days) and its labels, which come
    one to several days later, sent in the order they would arrive: each daily window's
    coverage rises as they come, and its maturity curve says how far it got by each age
    after the window closed. A rule with min_coverage 0.9 (always breached otherwise) stays
    quiet until the latest closed day is 90 % labeled. Mid-week the monitor is killed (-9)
    and restarted publishing to a new metrics topic, so that nothing it reads back holds the
    curves: its status page has every window's curve from its restored state, and the
    curves go on exactly."""
    path, model = bundle(tmp_path / "model")
    config = tmp_path / "monitor.toml"
    config.write_text(COVERAGE_RULE)
    topics = make_topics(topic_factory)
    rng = np.random.default_rng(5)
    today = int(time.time() * 1000) // DAY * DAY
    first = today - 7 * DAY
    n = 14_000
    x, y = sample(rng, n)
    preds = predictions(model, x, first, 7 * DAY, 0, rng)
    delays = rng.exponential(1.5 * DAY, n).astype(np.int64)
    never = rng.random(n) < 0.03
    label_ts = np.array([p["event_ts"] for p in preds]) + delays
    group = group_factory()
    mon = Monitor(kafka_bootstrap, topics, group, path, config, "1d", tmp_path / "m.log",
                  horizon_s=9 * 86_400)
    metrics_topics = [topics["metrics"]]
    curves: list[dict[int, dict[str, Any]]] = []
    page: dict[str, Any] = {}
    try:
        send_predictions(kafka_bootstrap, topics["pred"], preds)
        wait_windows(kafka_bootstrap, metrics_topics, "1d",
                     lambda g: sum(r["predicted"] for r in g.values()) == n,
                     "the week's predictions did not all arrive")
        sent, known = 0, -np.inf
        # The simulated clock: labels known by day 4, day 6, then all of them.
        for upto in (first + 4 * DAY, first + 6 * DAY, np.inf):
            batch = [(preds[i]["id"], int(y[i]), int(label_ts[i])) for i in range(n)
                     if not never[i] and known < label_ts[i] <= upto]
            known = upto
            send_labels(kafka_bootstrap, topics["labels"], batch)
            sent += len(batch)
            curves.append(wait_windows(
                kafka_bootstrap, metrics_topics, "1d",
                lambda g, want=sent: sum(r["count"] for r in g.values()) == want,
                f"{sent} labels were not all joined"))
            time.sleep(2)  # ticks: the coverage rule evaluates the latest closed day
            fired = [a for a in alerts(kafka_bootstrap, topics["alerts"])
                     if a.get("alert") == "recall_when_labeled"]
            if upto < np.inf:
                assert fired == [], (upto, fired)
            if len(curves) == 1:
                assert mon.kill() == -signal.SIGKILL
                metrics_topics.append(topic_factory("metrics2", 1))
                port = free_port()
                mon = Monitor(kafka_bootstrap, {**topics, "metrics": metrics_topics[-1]}, group,
                              path, config, "1d", tmp_path / "m2.log", horizon_s=9 * 86_400,
                              port=port)
                page = status_maturity(port, 7)
        deadline = time.monotonic() + 30
        while not fired and time.monotonic() < deadline:
            fired = [a for a in alerts(kafka_bootstrap, topics["alerts"])
                     if a.get("alert") == "recall_when_labeled"]
    finally:
        assert mon.stop() == 0, (tmp_path / "m2.log").read_text()[-3000:]
    days = sorted(curves[-1])
    assert len(days) == 7 and days[0] == first
    # After the restart the page showed the curves as they stood at the kill, each window's.
    assert [w["window_start"] for w in page["1d"]] == days
    for w in page["1d"]:
        assert (w["maturity"], w["coverage"]) == (curves[0][w["window_start"]]["maturity"],
                                                  curves[0][w["window_start"]]["coverage"])
    for start in days:
        covs = [c[start]["coverage"] if start in c else 0.0 for c in curves]
        assert covs == sorted(covs), (start, covs)  # it only rises
        events = np.array([0 <= p["event_ts"] - start < DAY for p in preds])
        age = label_ts - (start + DAY)  # a label's age after its window closed
        final = curves[-1][start]
        assert abs(final["coverage"] - (events & ~never).sum() / events.sum()) < 1e-12
        # The curve: the share labeled by each age after the close; it ends at the coverage.
        for point in final["maturity"]:
            bound = point["age_s"]
            by = events & ~never & (age <= (np.inf if bound is None else bound * 1000))
            assert abs(point["coverage"] - by.sum() / events.sum()) < 1e-12, (start, point)
        assert final["maturity"][-1]["coverage"] == final["coverage"]
        shape = ", ".join(f"{p['coverage']:.2f}" for p in final["maturity"]
                          if p["age_s"] in (0, 86_400, 3 * 86_400, 7 * 86_400))
        report(f"maturity of day {days.index(start) + 1}: coverage by day 4, 6, all: "
               + ", ".join(f"{c:.3f}" for c in covs) + f"; by close, 1d, 3d, 7d after: {shape}")
    # The latest closed day had no label by day 4 or 6 (its events are on day 7); the rule
    # waited for its coverage and fired (recall < 1.01 always) once it was 97 % labeled.
    assert len(fired) == 1 and fired[0]["window_start"] == days[-1]


def status_maturity(port: int, windows: int, timeout: float = 90) -> dict[str, Any]:
    """The maturity curves of the status page, once it has ``windows`` of them."""
    deadline, got = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=3) as r:
                models = orjson.loads(r.read())["models"]
        except OSError:
            models = []
        got = models[0]["maturity"] if models else {}
        if len(got.get("1d", [])) == windows:
            return dict(got)
        time.sleep(1)
    raise AssertionError(f"the restarted page did not show {windows} curves: {got}")
