"""A chaos run (issue 26): faults at random moments under steady labeled traffic, then an
exact account.

    flock /tmp/heavy.lock .venv/bin/python bench/chaos.py --guarantee exactly-once
    flock /tmp/heavy.lock .venv/bin/python bench/chaos.py --short --seed 7

Everything runs on a broker of the run's own (a free port, a fresh state folder): the
run stops, kills and pauses it. Traffic: two workers in one group (``--guarantee``), a
monitor, demo events at ``--rate`` per second, each with its label ``--label-delay`` s
later. Faults, one at a time, each after a pause drawn from the seed (30-120 s; short
mode 8-20 s; ``--gap``), cycling through the kinds in an order drawn from the seed, until
``--seconds`` of traffic, or until ``--faults`` faults and ``--calm`` s more (``--wait-ready``:
each fault only once every process is ready again):

- ``worker-kill``: kill -9 of a worker, restarted at once under the same instance id;
- ``worker-add-remove``: a third worker joins, and leaves (SIGTERM) 20 s later;
- ``monitor-kill``: kill -9 of the monitor, restarted under the same id;
- ``broker-stop``: a clean broker stop, then a start;
- ``broker-kill``: kill -9 of the broker, then a start;
- ``broker-pause``: SIGSTOP of the broker for ``--pause`` s (a network partition), SIGCONT;
- ``poison``: a 2 MB record on the input (a dead letter);
- ``model-promote-rollback``: a second model version (the demo model, another seed) added to
  the workers' model store, promoted through the control topic, rolled back 10 s later
  (bench/chaos_models.py; its record counts the outputs per model_version). Short mode
  draws it among the first four;
- ``retrain``: the real ``scoring-worker retrain --promote-if-better`` on the run's labeled
  traffic so far (input and labels topics), its candidate added to the same store and, if
  the promotion policy accepts it, promoted through the control topic (bench/chaos_retrain.py;
  its record: the command's seconds, the decision and why, the candidate's version, the
  outputs per model_version before, during and after). Short mode does not force it in;
- ``registry-pause`` (``--registry``: the events in Avro through a registry of the run's
  own): a new schema version registered, the registry paused ``--down`` s, the traffic on
  the new version meanwhile (bench/chaos_registry.py).

At the end (traffic stopped, outputs caught up, every process stopped with SIGTERM) the
account, as one JSON object on stdout (bench/chaos_account.py): every input id against the
outputs and dead letters (lost; duplicated, through a read_committed reader in exactly-once
mode), each process's exit statuses, peak RSS and ``readiness`` (every change of its /readyz
answer; a 503 names what keeps it), processes left behind, and each fault's record with the
seconds until scoring resumed on every output and every input partition, until /readyz
said 200, and how long it was not 200 before the next fault. The monitor's side (windows
against scikit-learn, join counters) is bench/chaos_windows.py, on a kept run. The workers
serve a model store folder and follow a control topic.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from chaos_account import Fault, ReadyLog, settle, totals
from chaos_models import MODEL_FAULT, Models, short_order
from chaos_parts import Broker, Outputs, Proc, Traffic, now_ms
from chaos_registry import REGISTRY_FAULT, Registry
from chaos_retrain import RETRAIN_FAULT, Retrain

from worker import kafka_io

#: Traffic without faults after the last one (a worker removed holds its partitions
#: for a session timeout, 10 s, after its 20 s in the group).
CALM_S = 45.0
FAULTS = ("worker-kill", "worker-add-remove", "monitor-kill", "broker-stop", "broker-kill",
          "broker-pause", "poison", MODEL_FAULT, RETRAIN_FAULT)


class Run:
    """The processes of one chaos run and the faults done to them."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.rng = random.Random(args.seed)
        self.broker = Broker(tmp / "broker")
        self.name = f"chaos-{uuid.uuid4().hex[:6]}"
        self.t = {k: f"{self.name}-{k}" for k in ("in", "out", "dlq", "labels", "metrics",
                                                  "alerts", "stats", "control")}
        self.models = Models(tmp, self.broker.bootstrap, self.t["control"])
        self.registry = Registry(tmp, self.t["in"]) if args.registry else None
        self.input_args = [] if self.registry is None else self.registry.args()
        self.retrain = Retrain(self.models, self.t["in"], self.t["labels"], self.t["alerts"],
                               args.label_delay, input_args=self.input_args)
        self.workers: list[Proc] = []
        self.extra: list[Proc] = []  # added workers, kept for the account
        self.monitor: Proc | None = None
        self.ready_log: ReadyLog = []
        self.faults: list[Fault] = []
        self._probing = threading.Event()

    def worker(self, n: int) -> Proc:
        t = self.t
        return Proc(f"worker-{n}", [
            "run", "--bootstrap", self.broker.bootstrap, "--input-topic", t["in"],
            "--output-topic", t["out"], "--dlq-topic", t["dlq"], "--group", self.name,
            *self.models.worker_args(), "--guarantee", self.args.guarantee, "--instance-id",
            f"w{n}", "--batch-max", "500", "--lineage", "true", *self.input_args,
            "--log-level", "WARNING"], self.tmp)

    def start(self) -> None:
        self.broker.start()
        if self.registry is not None:
            self.registry.start()
        b = self.broker.bootstrap
        kafka_io.create_topics(b, {self.t["in"]: 4}, config={"max.message.bytes": "8388608"})
        kafka_io.create_topics(b, {self.t["out"]: 4, self.t["dlq"]: 1, self.t["labels"]: 4,
                                   self.t["metrics"]: 1, self.t["alerts"]: 1,
                                   self.t["stats"]: 1})
        kafka_io.create_topics(b, {self.t["control"]: 1}, config={"cleanup.policy": "compact"})
        self.models.prepare()
        self.workers = [self.worker(n) for n in range(2)]
        t = self.t
        self.monitor = Proc("monitor", [
            "monitor", "--bootstrap", b, "--predictions-topic", t["out"], "--labels-topic",
            t["labels"], "--metrics-topic", t["metrics"], "--alerts-topic", t["alerts"],
            "--stats-topic", t["stats"], "--group", f"{self.name}-monitor", "--instance-id",
            "m0", "--models", self.models.monitor_models(), "--partitions", "2", "--state-dir",
            str(self.tmp / "state"), "--log-level", "WARNING"], self.tmp)
        for p in [*self.workers, self.monitor]:
            p.start()
        threading.Thread(target=self._probe, daemon=True).start()

    def _probe(self) -> None:
        while not self._probing.is_set():
            # Every process's answer goes into its readiness log; the workers' decide.
            answers = {p.name: p.ready() for p in self.processes() if p.running()}
            live = [answers[w.name] for w in self.workers if w.name in answers]
            ok = bool(live) and all(code == 200 for code in live)
            self.ready_log.append((now_ms(), ok))
            for p in self.processes():
                p.sample()
            time.sleep(0.5)

    def processes(self) -> list[Proc]:
        return [*self.workers, *self.extra, *([self.monitor] if self.monitor else [])]

    def wait_ready(self, timeout: float) -> None:
        """Until every worker's and the monitor's /readyz says 200 (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [p for p in self.processes() if p.running()]
            if live and all(p.ready() == 200 for p in live):
                return
            time.sleep(0.2)

    # -- faults ---------------------------------------------------------------------------

    def do(self, kind: str, traffic: Traffic, t0: float) -> Fault:
        start = now_ms()
        at = round(time.monotonic() - t0, 1)
        if kind == MODEL_FAULT:  # its record: the commands' times, for the account
            models = self.models.promote_rollback()
            return Fault(kind, at, start, now_ms(), models=models)
        if kind == RETRAIN_FAULT:  # on the traffic so far; outputs since the last fault
            traffic_ms = start - int((time.monotonic() - t0) * 1000)
            since = self.faults[-1].end_ms if self.faults else traffic_ms
            retrain = self.retrain.run(traffic_ms, since)
            return Fault(kind, at, start, now_ms(), retrain=retrain)
        if kind == REGISTRY_FAULT:
            assert self.registry is not None
            record = self.registry.pause_with_new_schema(
                lambda encode: setattr(traffic, "encode", encode), self.args.down)
            return Fault(kind, at, start, now_ms(), registry=record)
        self._actions()[kind](traffic)
        return Fault(kind, at, start, now_ms())

    def _actions(self) -> dict[str, Callable[[Traffic], None]]:
        return {"worker-kill": self._worker_kill, "worker-add-remove": self._add_remove,
                "monitor-kill": self._monitor_kill, "broker-stop": self._broker_stop,
                "broker-kill": self._broker_kill, "broker-pause": self._broker_pause,
                "poison": lambda tr: tr.poison(len(self.faults))}

    def _worker_kill(self, _: Traffic) -> None:
        w = self.rng.choice(self.workers)
        w.kill9()
        w.start()  # at once, under the same instance id: a container restart

    def _add_remove(self, _: Traffic) -> None:
        added = self.worker(len(self.workers) + len(self.extra))
        self.extra.append(added)
        added.start()
        time.sleep(20)
        added.stop()

    def _monitor_kill(self, _: Traffic) -> None:
        assert self.monitor is not None
        self.monitor.kill9()
        self.monitor.start()

    def _broker_stop(self, _: Traffic) -> None:
        self.broker.stop()
        time.sleep(self.args.down)
        self.broker.start()

    def _broker_kill(self, _: Traffic) -> None:
        self.broker.kill()
        time.sleep(self.args.down)
        self.broker.start()

    def _broker_pause(self, _: Traffic) -> None:
        self.broker.pause(self.args.pause)

    def stop(self) -> dict[str, Any]:
        """SIGTERM every process, then the broker; exit statuses, peaks, leftovers."""
        self._probing.set()
        procs = {p.name: p for p in self.processes()}
        crashed = {}
        for p in procs.values():
            if p.running():
                p.stop()
            elif p.popen is not None and len(p.exit_codes) < p.starts:  # ended by itself
                p.exit_codes.append(p.popen.returncode)
                crashed[p.name] = p.log_tail()
        left = [p.name for p in procs.values() if p.running()]
        self.broker.stop()
        if self.registry is not None:
            self.registry.stop()
        if self.broker.alive():
            left.append("broker")
        return {"exit_codes": {n: p.exit_codes for n, p in procs.items()},
                "peak_rss_mib": {n: round(p.peak_mib) for n, p in procs.items()},
                "left_behind": left, "ended_by_themselves": crashed,
                "stuck_at_stop": {n: p.stuck for n, p in procs.items() if p.stuck},
                "unclean_stop": {n: p.unclean for n, p in procs.items() if p.unclean},
                "readiness": {n: p.readiness for n, p in procs.items()}}


def pauses(args: argparse.Namespace) -> tuple[float, float]:
    if args.gap is not None:
        return args.gap[0], args.gap[1]
    return (8.0, 20.0) if args.short else (30.0, 120.0)


def over(args: argparse.Namespace, run: Run, elapsed: float, wait: float) -> bool:
    """Whether to stop faulting: ``--faults`` done, or the next one would leave the traffic
    less than ``--calm`` s after it."""
    if args.faults is not None:
        return len(run.faults) >= args.faults
    return elapsed + wait + args.calm > args.seconds


def chaos(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    run = Run(args, tmp)
    run.start()
    b = run.broker.bootstrap
    eos = args.guarantee == "exactly-once"
    outputs = Outputs(b, run.t["out"], run.t["dlq"], committed_only=eos)
    outputs.start()
    traffic = Traffic(b, run.t["in"], run.t["labels"], args.rate, args.label_delay, args.seed)
    if run.registry is not None:
        traffic.encode = run.registry.encoder(run.registry.version)
    traffic.start()
    t0 = time.monotonic()
    kinds = [*FAULTS, *([REGISTRY_FAULT] if run.registry is not None else [])]
    run.rng.shuffle(kinds)
    if args.short:
        kinds = short_order(kinds)
        if run.registry is not None:  # about five faults in a short run: this one second
            kinds.remove(REGISTRY_FAULT)
            kinds.insert(1, REGISTRY_FAULT)
    lo, hi = pauses(args)
    traffic_s = 0.0
    try:
        while True:
            wait = run.rng.uniform(lo, hi)
            # The last fault leaves traffic enough to show when scoring resumed.
            if over(args, run, time.monotonic() - t0, wait):
                break
            time.sleep(wait)
            run.wait_ready(args.wait_ready)
            fault = run.do(kinds[len(run.faults) % len(kinds)], traffic, t0)
            run.faults.append(fault)
            print(orjson.dumps(asdict(fault)).decode(), file=sys.stderr, flush=True)
        end = args.seconds if args.faults is None else time.monotonic() - t0 + args.calm
        time.sleep(max(0.0, end - (time.monotonic() - t0)))
    finally:
        traffic_s = round(time.monotonic() - t0, 1)
        traffic_end_ms = now_ms()
        traffic.finish.set()
        traffic.join(900)
        sent = set(traffic.sent)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline and not sent <= set(outputs.seen()):
            time.sleep(1)
        time.sleep(5)  # late duplicates still show
        settle(run.faults, run.ready_log, outputs, traffic_end_ms)
        procs = run.stop()
        outputs.stopped.set()
        outputs.join(30)
    return totals(args, traffic, outputs, run.faults, traffic_s, procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guarantee", choices=["at-least-once", "exactly-once"],
                    default="at-least-once")
    ap.add_argument("--short", action="store_true",
                    help="a short run: 150 s (unless --seconds), faults every 8-20 s")
    ap.add_argument("--seconds", type=float, default=None,
                    help="length of the traffic (default 3600, short 150)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=500.0, help="events per second")
    ap.add_argument("--label-delay", type=float, default=5.0)
    ap.add_argument("--down", type=float, default=10.0,
                    help="seconds a stopped or killed broker stays down")
    ap.add_argument("--pause", type=float, default=20.0,
                    help="seconds the broker stays stopped with SIGSTOP")
    ap.add_argument("--faults", type=int, default=None,
                    help="stop after this many faults and --calm s of traffic (not --seconds)")
    ap.add_argument("--gap", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="seconds between faults (default 30-120, short 8-20)")
    ap.add_argument("--wait-ready", type=float, default=0.0,
                    help="before each fault, wait up to this long for every process's /readyz "
                    "200 (default 0: faults may overlap a recovery)")
    ap.add_argument("--calm", type=float, default=CALM_S,
                    help=f"traffic without faults after the last one (default {CALM_S:.0f})")
    ap.add_argument("--drain", type=float, default=300.0,
                    help="longest wait for the outputs to catch up at the end")
    ap.add_argument("--registry", action="store_true",
                    help="events in Avro through a registry of the run's own, and the fault "
                    f"{REGISTRY_FAULT} (bench/chaos_registry.py)")
    ap.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = ap.parse_args()
    if args.seconds is None:
        args.seconds = 150.0 if args.short else 3600.0
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        result = chaos(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs in {tmp}", file=sys.stderr)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
