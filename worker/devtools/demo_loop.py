"""``scoring-worker demo --drift``: the whole model lifecycle on one broker.

A champion serves two real workers (a store folder and a control topic) and a monitor
watches it. Demo traffic with labels drifts; the monitor's alerts fire; ``scoring-worker
retrain --promote-if-better`` runs on the post-drift range as an operator (or a cron
job) would; the policy promotes the candidate through the store and the control topic;
the workers swap; the monitor's windows show recall recover. Then the figures of the run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from worker import kafka_io
from worker.clock import wall_ms
from worker.devtools.demo import DEMO_ALERTS, DEMO_MODEL_NAME, train_demo
from worker.devtools.demo_run import _spawn, _stop, wait_ready
from worker.devtools.loop_story import (
    LoopReport,
    check_predictions,
    latest_by_key,
    read_windows,
    story,
)
from worker.devtools.produce_demo import DemoSummary, DemoTraffic, produce_demo
from worker.errors import ScoringError
from worker.kafka_io.config import Connection, Role, client_config
from worker.kafka_io.ranges import RangeRecord, read_range
from worker.model.store import ModelStore

POLICY = """
[policy]
min_rows = 2000
min_positives = 50
threshold = "alert_rate"   # flag as many events as the old model did before the drift
threshold_target = 0.02
"""


@dataclass(frozen=True)
class LoopPlan:
    rate: float = 3000.0  # events per second
    healthy: int = 30_000  # events before the drift: at least two windows' worth
    train_drifted: int = 45_000  # drifted events before retraining starts
    after: int = 45_000  # events after the promotion
    label_delay_s: float = 2.0
    workers: int = 2
    window: str = "5s"  # the monitor's tumbling windows
    timeout_s: float = 240.0


class Loop:
    def __init__(self, bootstrap: str, workdir: Path, plan: LoopPlan) -> None:
        self.bootstrap, self.workdir, self.plan = bootstrap, workdir, plan
        self.run_id = uuid.uuid4().hex[:6]
        self.t = {k: f"loop-{self.run_id}-{k}" for k in
                  ("tx", "pred", "dlq", "labels", "metrics", "alerts", "stats", "ctl")}
        self.conf = client_config(Role.RANGE, Connection(bootstrap))
        self.report = LoopReport()
        self.sent = DemoSummary()
        self.stop_traffic = threading.Event()
        self.t0 = time.monotonic()

    def note(self, what: str) -> None:
        self.report.timeline.append((time.monotonic() - self.t0, what))

    def read(self, topic: str) -> list[RangeRecord]:
        return read_range(self.conf, topic, 0, wall_ms() + 60_000, 60.0, 10_000_000)

    def setup(self) -> Path:
        champion = self.workdir / "champion"
        if not (champion / "model.json").exists():
            train_demo(champion)
        t, ctl = self.t, self.t["ctl"]
        kafka_io.create_topics(self.bootstrap, {t["tx"]: 4, t["pred"]: 4, t["dlq"]: 1,
                                                t["labels"]: 4, t["alerts"]: 1})
        kafka_io.create_topics(self.bootstrap, {ctl: 1}, config={"cleanup.policy": "compact"})
        store = ModelStore(self.workdir / f"store-{self.run_id}")
        store.add(champion)
        store.promote(DEMO_MODEL_NAME, "1")
        (self.workdir / "monitor.toml").write_text(DEMO_ALERTS)
        (self.workdir / "retrain.toml").write_text(
            f'bootstrap = "{self.bootstrap}"\nmodel = "{store.folder(DEMO_MODEL_NAME)}"\n'
            f'input_topic = "{t["tx"]}"\nlabels_topic = "{t["labels"]}"\n'
            f'control_topic = "{ctl}"\nalerts_topic = "{t["alerts"]}"\n' + POLICY)
        return store.folder(DEMO_MODEL_NAME)

    def start(self, model: Path) -> dict[str, subprocess.Popen[bytes]]:
        t, procs = self.t, {}
        for i in range(self.plan.workers):
            procs[f"worker-{i}"], port = _spawn(
                ["run", "--bootstrap", self.bootstrap, "--input-topic", t["tx"],
                 "--output-topic", t["pred"], "--dlq-topic", t["dlq"], "--group",
                 f"loop-{self.run_id}", "--model", str(model), "--control-topic", t["ctl"],
                 "--alerts-topic", t["alerts"], "--model-poll-ms", "200",
                 # Workers on one host: each its own id (static group member).
                 "--instance-id", f"worker-{i}"],
                self.workdir / f"worker-{i}.log")
            wait_ready(port, procs[f"worker-{i}"], 60.0)
        procs["monitor"], port = _spawn(
            ["monitor", "--config", str(self.workdir / "monitor.toml"), "--bootstrap",
             self.bootstrap, "--predictions-topic", t["pred"], "--labels-topic", t["labels"],
             "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"], "--stats-topic",
             t["stats"], "--group", f"loop-{self.run_id}-monitor", "--instance-id", "loop",
             "--models", str(model / "1"), "--windows", self.plan.window, "--tick-ms", "500",
             "--state-dir", str(self.workdir / "monitor-state")],
            self.workdir / "monitor.log")
        wait_ready(port, procs["monitor"], 60.0)
        self.note(f"champion {DEMO_MODEL_NAME} 1 serves {self.plan.workers} workers (store "
                  f"{model}, control topic {t['ctl']}); monitor and traffic start; the "
                  f"monitor's status page: http://127.0.0.1:{port}/")
        return procs

    def traffic(self) -> threading.Thread:
        p = self.plan
        demo = DemoTraffic(topic=self.t["tx"], count=10**9, rate=p.rate,
                           labels_topic=self.t["labels"], label_delay_s=p.label_delay_s,
                           drift_after=p.healthy, bad_every=200)
        conf = client_config(Role.PRODUCER, Connection(self.bootstrap))
        thread = threading.Thread(target=produce_demo, daemon=True, kwargs={
            "t": demo, "producer_conf": conf, "stop": self.stop_traffic.is_set,
            "summary": self.sent})
        thread.start()
        return thread

    def wait(self, what: str, ok: object, step: float = 0.5) -> None:
        deadline = self.t0 + self.plan.timeout_s
        while not (callable(ok) and ok()):
            if time.monotonic() > deadline:
                raise ScoringError(f"demo --drift: timed out waiting for {what}")
            time.sleep(step)

    def alerts_firing(self, names: set[str]) -> bool:
        seen = [a for a in latest_by_key(self.read(self.t["alerts"])).values()
                if a.get("status") == "firing" and a.get("alert") in names]
        for a in seen:
            if a not in self.report.alerts:
                self.report.alerts.append(a)
                self.note(f"monitor alert {a['alert']} firing for v{a['model_version']}: "
                          f"{a['metric']} {a['value']:.3f} {a['op']} {a['threshold']} "
                          f"({a['basis_count']:,} events, {a['window']})")
        return names <= {a["alert"] for a in seen}

    def retrain(self) -> None:
        p, start = self.plan, self.sent.drift_started_ms or 0
        end = wall_ms() - int((p.label_delay_s + 1) * 1000)  # labels of older events are in
        cmd = [sys.executable, "-m", "worker", "retrain", "--config",
               str(self.workdir / "retrain.toml"), "--from", str(start + 1000), "--to",
               str(end), "--promote-if-better"]
        self.report.retrain_command = ["scoring-worker", *cmd[3:]]
        self.note("retrain: " + " ".join(self.report.retrain_command))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        self.report.retrain_output = done.stdout + done.stderr
        self.report.retrain_exit = done.returncode
        self.note(f"retrain finished (exit {done.returncode}): "
                  + (done.stdout.strip().splitlines() or ["-"])[-1])

    def finish(self) -> None:
        r, n = self.report, self.sent.events
        r.events, r.malformed = n, self.sent.malformed
        r.drift_started_ms = self.sent.drift_started_ms
        expected = {f"tx-{i}" for i in range(n) if i % 200 != 199}  # bad_every=200
        preds: list[RangeRecord] = []

        def all_scored() -> bool:
            preds[:] = self.read(self.t["pred"])
            return len({orjson.loads(p.value or b"{}")["id"] for p in preds}) >= len(expected)

        self.wait("every prediction", all_scored, step=2.0)
        check_predictions(r, preds, expected)
        if r.first_v2_ms is not None:
            after = (r.first_v2_ms - (r.drift_started_ms or 0)) / 1000
            self.note(f"first prediction of v2 at {after:.1f}s after the drift began")
        metrics: dict[bytes, dict[str, object]] = {}

        def monitor_caught_up() -> bool:
            metrics.update(latest_by_key(self.read(self.t["metrics"])))
            rolling = [m for m in metrics.values() if m.get("window") == "rolling"]
            return sum(int(str(m.get("count") or 0)) for m in rolling) >= len(expected)

        self.wait("the monitor's last windows", monitor_caught_up, step=2.0)
        read_windows(r, metrics, self.plan.window)
        r.decision = next((a for a in latest_by_key(self.read(self.t["alerts"])).values()
                           if a.get("alert") == "model_decision"), {})


def run_loop(bootstrap: str, workdir: Path, plan: LoopPlan | None = None,
             cleanup: bool = False) -> LoopReport:
    """The loop; ``cleanup`` deletes its topics at the end (tests)."""
    plan = plan or LoopPlan()
    workdir.mkdir(parents=True, exist_ok=True)
    loop = Loop(bootstrap, workdir, plan)
    model = loop.setup()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs = loop.start(model)
        feeder = loop.traffic()
        loop.wait("the drift", lambda: loop.sent.drift_started_ms is not None)
        loop.note(f"the fraud pattern drifts (from event {plan.healthy:,})")
        loop.wait("the recall alert", lambda: loop.alerts_firing({"recall_low"}), step=1.0)
        loop.wait("post-drift traffic", lambda: loop.sent.drifted >= plan.train_drifted)
        loop.retrain()
        promoted_at = loop.sent.events
        loop.wait("post-promotion traffic", lambda: loop.sent.events >= promoted_at + plan.after)
        loop.stop_traffic.set()
        feeder.join(60)
        loop.note(f"traffic stops: {loop.sent.events:,} events, {loop.sent.labels:,} labels")
        loop.finish()
    finally:
        loop.stop_traffic.set()
        for name, proc in procs.items():
            loop.report.exits[name] = _stop(proc)
        if cleanup:
            names = [*loop.t.values(), *(f"loop-{loop.run_id}-monitor-{k}" for k in
                                         ("join", "partials", "join-changelog",
                                          "global-changelog"))]
            kafka_io.delete_topics(bootstrap, names)
    return loop.report


def main(bootstrap: str, workdir: Path, plan: LoopPlan | None = None) -> int:
    report = run_loop(bootstrap, workdir, plan)
    print(story(report))
    r = report
    ok = (r.lost == 0 and r.decision.get("action") == "promoted" and r.retrain_exit == 0
          and not any(r.exits.values()))
    return 0 if ok else 1
