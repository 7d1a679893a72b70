"""Launcher pieces that need no broker: tool checks and the generated config."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.devtools import kafka_local
from worker.errors import KafkaLocalError


def test_missing_java_names_the_tools_and_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KafkaLocalError) as exc:
        kafka_local.check_tools()
    msg = str(exc.value)
    assert "java and mvn not found" in msg
    assert "docker compose" in msg


def test_server_properties_single_node_internal_topics(tmp_path: Path) -> None:
    b = kafka_local.LocalBroker(port=12000, state_root=tmp_path)
    props = dict(
        line.split("=", 1) for line in kafka_local._server_properties(b).splitlines() if line
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:12000,CONTROLLER://127.0.0.1:12001"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1"
    assert props["log.dirs"].startswith(str(tmp_path))


def test_pom_pins_kafka_and_a_log4j2_backend() -> None:
    pom = kafka_local._pom(kafka_local.LocalBroker(version="4.1.1"))
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in pom
    assert "log4j-core" in pom and "log4j-slf4j2-impl" in pom


def test_stale_pid_file_is_not_a_running_broker(tmp_path: Path) -> None:
    b = kafka_local.LocalBroker(port=12010, state_root=tmp_path)
    b.state_dir.mkdir(parents=True)
    b.pid_file.write_text("1\n")  # pid 1 is alive but is not our broker
    assert kafka_local.running_pid(b) is None
    assert not b.pid_file.exists()
