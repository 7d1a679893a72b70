"""Launcher pieces that need no broker: tool checks and the generated config."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.devtools import kafka_local, kafka_tls
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


def test_a_start_failure_names_the_data_kept_from_earlier_runs(tmp_path: Path) -> None:
    b = kafka_local.LocalBroker(port=12030, state_root=tmp_path)
    assert kafka_local._kept_data_hint(b, 120) == ""  # no data folder yet
    for i in range(499):
        (b.state_dir / "data" / f"t-{i}-0").mkdir(parents=True)
    assert kafka_local._kept_data_hint(b, 120) == ""  # an ordinary broker's worth
    (b.state_dir / "data" / "t-last-0").mkdir()
    hint = kafka_local._kept_data_hint(b, 120)
    assert "500 partitions from earlier runs" in hint and "(now 120s)" in hint
    assert "`scoring-worker kafka-local reset --port 12030`" in hint


def test_maven_output_becomes_a_few_progress_lines() -> None:
    from worker.devtools.kafka_fetch import MavenProgress

    said: list[str] = []
    now = [0.0]
    progress = MavenProgress(said.append, clock=lambda: now[0], last=0.0)
    base = "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/x/"
    progress.feed(base + "small.pom (2.1 kB at 40 kB/s)")
    progress.feed(base + "kafka_2.13-4.1.1.jar (6.4 MB at 2.1 MB/s)")
    assert said == ["downloaded kafka_2.13-4.1.1.jar (6.4 MB; 2 files, 6.4 MB so far)"]
    progress.feed("[INFO] Copying a.jar to /x/a.jar")
    now[0] = 6.0  # a quiet stretch still gets a line every few seconds
    progress.feed(base + "tiny.pom (800 B at 1 kB/s)")
    assert said[-1] == "still resolving: 3 files downloaded (6.4 MB), 1 jars copied"
    assert len(said) == 2


def test_secure_listener_for_sasl_and_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = kafka_local.LocalBroker(port=12020, state_root=tmp_path)
    made: list[Path] = []

    def fake_tls(folder: Path, host: str) -> kafka_tls.BrokerTls:
        made.append(folder)
        return kafka_tls.BrokerTls(folder / "broker.p12", "pw", folder / "ca.pem")

    monkeypatch.setattr(kafka_tls, "broker_tls", fake_tls)
    sec = kafka_local.Security.parse("alice:s3cret", tls=True)
    props = dict(line.split("=", 1)
                 for line in kafka_local._server_properties(b, sec).splitlines() if line)
    assert props["listeners"].endswith(",SECURE://127.0.0.1:12022")
    assert props["listener.security.protocol.map"].endswith("SECURE:SASL_SSL")
    assert props["listener.name.secure.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.secure.ssl.keystore.type"] == "PKCS12"
    assert made == [b.state_dir / "tls"]
    client = kafka_local.client_properties(b, sec)
    assert client["security.protocol"] == "SASL_SSL"
    assert client["ssl.ca.location"] == str(b.state_dir / "tls" / "ca.pem")
    hints = " ".join(kafka_local.client_hints(b, sec))
    assert "--bootstrap 127.0.0.1:12022" in hints and "s3cret" not in hints
    assert kafka_local.Security.parse(None, tls=True).protocol == "SSL"
    assert kafka_local.Security.parse("bob:pw1", tls=False).protocol == "SASL_PLAINTEXT"
    plain = kafka_local._server_properties(b)
    assert "SECURE:" not in plain and "scram" not in plain


def test_cluster_ids_never_read_as_an_option() -> None:
    ids = [kafka_local._cluster_id() for _ in range(2000)]  # about 31 would start with "-"
    assert len(set(ids)) == 2000 and all(len(i) == 22 for i in ids)
    assert not any(i.startswith("-") for i in ids)
