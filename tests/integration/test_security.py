"""SASL/SCRAM and TLS against a real broker started with ``kafka-local --sasl --tls``.

The broker is this module's own (its own ports and state folder), never the shared one.
The worker and the monitor run over SASL_SSL; a wrong password and an untrusted
certificate each end within 10 s with one line naming the cause, exit status 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.integration.helpers import ROOT, WorkerProc, free_ports, read_topic, wait_for
from worker import kafka_io
from worker.devtools import kafka_local
from worker.devtools.demo import train_demo
from worker.devtools.kafka_tls import make_ca

USER, PASSWORD = "alice", "alice-secret-4711"


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _log_tail(state: Path) -> str:
    logs = sorted(state.glob("kafka-*/logs/server.log"))
    return "\n".join(logs[0].read_text(errors="replace").splitlines()[-30:]) if logs else ""


@dataclass(frozen=True)
class SecureBroker:
    plain: str  # PLAINTEXT listener, for the test's own set-up and checks
    secure: str  # SASL_SSL listener
    props: dict[str, str]

    def flags(self, **override: str) -> list[str]:
        props = {**self.props, **override}
        out = ["--bootstrap", self.secure]
        for k, v in props.items():
            out += ["--kafka", f"{k}={v}"]
        return out


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory,
           report: Callable[[str], None]) -> Iterator[SecureBroker]:
    port, state = free_ports(3), tmp_path_factory.mktemp("secure-broker")
    common = ("--port", str(port), "--state-dir", str(state))
    try:
        started = cli("kafka-local", "start", *common, "--sasl", f"{USER}:{PASSWORD}", "--tls")
        assert started.returncode == 0, started.stdout + started.stderr + _log_tail(state)
        assert "SASL_SSL listener" in started.stdout and PASSWORD not in started.stdout
        report(f"kafka-local start --sasl --tls: {started.stdout.splitlines()[0]}")
        b = kafka_local.LocalBroker(port=port, state_root=state)
        sec = kafka_local.Security(USER, PASSWORD, tls=True)
        yield SecureBroker(b.bootstrap, f"127.0.0.1:{port + 2}",
                           kafka_local.client_properties(b, sec))
    finally:
        stopped = cli("kafka-local", "stop", *common)
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=5, n=5_000)


def _only_json_and_one_error(stderr: str) -> str:
    """Every stderr line is a JSON log line except exactly one error line, returned."""
    errors = []
    for line in stderr.splitlines():
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            errors.append(line)
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_worker_and_monitor_work_over_sasl_ssl(broker: SecureBroker, model: Path,
                                                tmp_path: Path) -> None:
    names = {n: f"sec-{n}-{time.time_ns()}" for n in ("tx", "pred", "dlq", "labels", "metrics")}
    kafka_io.create_topics(broker.plain, {names["tx"]: 2, names["pred"]: 2, names["dlq"]: 1,
                                          names["labels"]: 2})
    sent = cli("produce-demo", *broker.flags(), "--topic", names["tx"], "--count", "300",
               "--rate", "0", "--labels-topic", names["labels"])
    assert sent.returncode == 0, sent.stderr
    worker = WorkerProc([*broker.flags(), "--model", str(model), "--input-topic", names["tx"],
                         "--output-topic", names["pred"], "--dlq-topic", names["dlq"],
                         "--group", f"sec-{time.time_ns()}", "--metrics-port", "0"],
                        tmp_path / "worker.log")
    mon_log = (tmp_path / "monitor.log").open("wb")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "worker", "monitor", *broker.flags(),
         "--predictions-topic", names["pred"], "--labels-topic", names["labels"],
         "--metrics-topic", names["metrics"], "--group", f"secmon-{time.time_ns()}",
         "--instance-id", "sec", "--windows", "1h", "--partitions", "1", "--metrics-port", "0"],
        stdout=mon_log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        predictions = read_topic(broker.plain, names["pred"], 300, timeout=90, settle=0.5)
        assert len(predictions) == 300, worker.output()[-2000:]
        metrics: list[object] = []

        def figures_arrived() -> bool:
            metrics.extend(read_topic(broker.plain, names["metrics"], 1, timeout=2, settle=0))
            return bool(metrics)

        wait_for(figures_arrived, 90, "the monitor's figures over SASL_SSL")
    finally:
        monitor.send_signal(signal.SIGTERM)
        mon_exit = monitor.wait(60)
        mon_log.close()
        assert worker.stop() == 0, worker.output()[-2000:]
    assert mon_exit == 0, (tmp_path / "monitor.log").read_text()[-2000:]
    assert PASSWORD not in worker.output()
    assert PASSWORD not in (tmp_path / "monitor.log").read_text()


@pytest.mark.parametrize("command", ["run", "monitor"])
@pytest.mark.parametrize("fault", ["wrong-password", "untrusted-certificate"])
def test_a_refused_credential_ends_within_10s_with_one_line(
    broker: SecureBroker, model: Path, tmp_path: Path, command: str, fault: str,
    report: Callable[[str], None],
) -> None:
    if fault == "wrong-password":
        flags, cause = broker.flags(**{"sasl.password": "not-the-password"}), "authentication"
    else:
        other = make_ca(tmp_path / "other-ca", "other-ca-pw", "an unrelated CA")
        flags, cause = broker.flags(**{"ssl.ca.location": str(other)}), "TLS"
    args = ["--model", str(model)] if command == "run" else []
    t0 = time.monotonic()
    done = cli(command, *flags, *args, "--metrics-port", "0", timeout=60)
    took = time.monotonic() - t0
    report(f"{command} with {fault}: exit {done.returncode} after {took:.1f}s")
    line = _only_json_and_one_error(done.stderr)
    assert done.returncode == 1, done.stderr[-2000:]
    assert line.startswith(f"scoring-worker {command}: error: {cause}"), line
    assert took < 10
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
