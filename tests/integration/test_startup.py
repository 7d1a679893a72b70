"""Start-up against the real broker: several bootstrap servers, SIGTERM at any moment of
start-up, stderr that carries only JSON lines, and secrets that never reach any output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.integration.helpers import ROOT, WorkerProc, produce, read_topic
from worker.devtools.demo import make_events, train_demo


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    return make_events(np.random.default_rng(seed), n, 0, int(time.time() * 1000))[0]

TopicFactory = Callable[..., str]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=4, n=5_000)


def _not_json(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            out.append(line)
    return out


def test_any_answering_broker_of_the_list_is_enough_and_stderr_is_json_only(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    model: Path, tmp_path: Path,
) -> None:
    tx, out, dlq = topic_factory("tx", 2), topic_factory("out", 2), topic_factory("dlq", 1)
    events = _events(50, seed=2)
    produce(kafka_bootstrap, tx, [(str(e["id"]).encode(), orjson.dumps(e)) for e in events])
    err = (tmp_path / "worker.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--bootstrap", f"127.0.0.1:1,{kafka_bootstrap}",
         "--model", str(model), "--input-topic", tx, "--output-topic", out, "--dlq-topic", dlq,
         "--group", group_factory(), "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    try:
        assert len(read_topic(kafka_bootstrap, out, 50, timeout=60, settle=0.5)) == 50
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        err.close()
    stderr = (tmp_path / "worker.err").read_text()
    assert code == 0, stderr[-2000:]
    # 127.0.0.1:1 refuses every connection: librdkafka says so, through the JSON logger
    assert _not_json(stderr) == [], _not_json(stderr)[:5]


@pytest.mark.parametrize("command", ["run", "monitor"])
def test_sigterm_during_the_wait_for_the_broker_exits_0_at_once(
    command: str, model: Path, report: Callable[[str], None]
) -> None:
    args = ["--model", str(model)] if command == "run" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", command, *args, "--bootstrap", "127.0.0.1:1",
         "--start-timeout-s", "120", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    time.sleep(4)  # past the imports, the model load and into the wait
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    report(f"{command}: SIGTERM during the start-up wait for the broker: exit "
           f"{proc.returncode} after {took:.2f}s")
    assert proc.returncode == 0, stderr
    assert took < 3
    assert "stopped during start-up" in stderr and _not_json(stderr) == []


def test_log_format_text_for_a_terminal(model: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--model", str(model), "--bootstrap",
         "127.0.0.1:1", "--start-timeout-s", "1", "--metrics-port", "0", "--log-format", "text"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = done.stderr.splitlines()
    assert done.returncode == 1
    assert any(" INFO worker: starting settings={" in ln for ln in lines), lines
    assert _not_json(done.stderr) == lines  # no JSON at all


# Every librdkafka property that carries a secret, each with a value to hunt for.
SECRETS = {
    "sasl.password": "hunt-sasl-password-1",
    "ssl.key.password": "hunt-ssl-key-password-2",
    "ssl.keystore.password": "hunt-keystore-password-3",
    "sasl.oauthbearer.config": "principal=hunt-oauth-config-4",
    "sasl.oauthbearer.client.secret": "hunt-oauth-client-secret-5",
    "sasl.oauthbearer.assertion.private.key.passphrase": "hunt-assertion-passphrase-6",
}
# These make the client refuse to start when TLS is on; checked in a run of their own.
PEM_SECRETS = {
    "ssl.key.pem": "hunt-ssl-key-pem-7",
    "sasl.oauthbearer.assertion.private.key.pem": "hunt-assertion-key-pem-8",
}


def _flags(props: dict[str, str]) -> list[str]:
    return [x for k, v in props.items() for x in ("--kafka", f"{k}={v}")]


def test_no_secret_reaches_any_output(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    model: Path, tmp_path: Path,
) -> None:
    tx, out = topic_factory("tx", 1), topic_factory("out", 1)
    produce(kafka_bootstrap, tx, [(b"k", orjson.dumps(e)) for e in _events(5, seed=3)])
    # DEBUG everywhere: our settings dump, librdkafka's configuration and security debug
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--model", str(model), "--input-topic", tx,
                    "--output-topic", out, "--dlq-topic", out, "--group", group_factory(),
                    "--metrics-port", "0", "--log-level", "DEBUG",
                    *_flags({**SECRETS, "debug": "conf,security,broker"})],
                   tmp_path / "w.log")
    try:
        assert len(read_topic(kafka_bootstrap, out, 5, timeout=60, settle=0.5)) == 5
    finally:
        code = w.stop()
    output = w.output()
    assert code == 0, output[-2000:]
    assert "***" in output  # the settings were logged, masked
    runs = [output]
    for command in ("run", "monitor"):  # refused at the property check: the error line too
        extra = ["--model", str(model)] if command == "run" else []
        done = subprocess.run(
            [sys.executable, "-m", "worker", command, *extra, "--bootstrap", kafka_bootstrap,
             "--metrics-port", "0", "--log-level", "DEBUG", "--kafka", "security.protocol=SSL",
             *_flags({**SECRETS, **PEM_SECRETS})],
            capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 2, done.stderr
        runs.append(done.stdout + done.stderr)
    for text in runs:
        for name, value in {**SECRETS, **PEM_SECRETS}.items():
            assert value not in text, f"{name} leaked"
