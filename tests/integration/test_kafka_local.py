"""The launcher: idempotent start, a clean stop, and the warm-cache readiness time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from worker import kafka_io
from worker.devtools import kafka_local


def _java_brokers(state_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "kafka.Kafka"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if str(state_dir) in line]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "kafka-local", *args],
                          capture_output=True, text=True, timeout=180)


def test_start_twice_gives_one_broker_and_stop_leaves_none(
    tmp_path: Path, kafka_bootstrap: str, report: Callable[[str], None]
) -> None:
    # kafka_bootstrap first: the session broker warmed the jar cache.
    port = 19392
    state = tmp_path / "state"
    broker = kafka_local.LocalBroker(port=port, state_root=state)
    common = ("--port", str(port), "--state-dir", str(state))
    try:
        first = _cli("start", *common)
        assert first.returncode == 0, first.stderr
        assert "ready on" in first.stdout
        ready = float(first.stdout.split(" in ")[1].split("s")[0])
        report(f"kafka-local start with a warm jar cache: broker ready in {ready:.1f}s")
        assert kafka_io.port_open("127.0.0.1", port)
        second = _cli("start", *common)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert len(_java_brokers(broker.state_dir)) == 1
        assert _cli("status", *common).returncode == 0
    finally:
        stop = _cli("stop", *common)
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    assert _java_brokers(broker.state_dir) == []
    assert not kafka_io.port_open("127.0.0.1", port)
    assert _cli("status", *common).returncode == 1
