"""``registry-local``: a real Apicurio registry from Maven Central, its Confluent API, and the
launcher's start/status/stop/reset."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from tests.integration.helpers import free_ports
from worker import kafka_io
from worker.devtools import registry_local

AVRO = '{"type": "record", "name": "Txn", "fields": [{"name": "id", "type": "string"}]}'


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "registry-local", *args],
                          capture_output=True, text=True, timeout=300)


def test_the_session_registry_speaks_confluents_api(
    schema_registry: registry_local.LocalRegistry,
) -> None:
    client = SchemaRegistryClient({"url": schema_registry.url})
    registered = client.register_schema("registry-local-value", Schema(AVRO, "AVRO"))
    assert client.get_schema(registered).schema_str is not None
    assert "registry-local-value" in client.get_subjects()
    status = _cli("status", "--port", str(schema_registry.port),
                  "--state-dir", str(schema_registry.state_root))
    assert status.returncode == 0 and "running at" in status.stdout, status


def test_start_twice_status_stop_reset(
    tmp_path: Path, schema_registry: registry_local.LocalRegistry,
    report: Callable[[str], None],
) -> None:
    # schema_registry first: the session's registry filled the distribution cache.
    port = free_ports(1)
    common = ("--port", str(port), "--state-dir", str(tmp_path / "state"))
    r = registry_local.LocalRegistry(port=port, state_root=tmp_path / "state")
    try:
        first = _cli("start", *common)
        assert first.returncode == 0, first.stderr
        assert f"ready at http://127.0.0.1:{port}/apis/ccompat/v7" in first.stdout
        report("registry-local start with a warm cache: ready in "
               + first.stdout.split(" in ")[1].split("s ")[0] + "s")
        assert registry_local.answers(r.url)
        second = _cli("start", *common)
        assert "already running" in second.stdout, second
        assert _cli("status", *common).returncode == 0
        refused = _cli("reset", *common)
        assert refused.returncode != 0 and "stop the registry" in refused.stdout + refused.stderr
    finally:
        stop = _cli("stop", *common)
    assert "stopped" in stop.stdout, stop
    assert not kafka_io.port_open("127.0.0.1", port)
    assert _cli("status", *common).returncode == 1
    assert "not running" in _cli("stop", *common).stdout
    assert _cli("reset", *common).returncode == 0
    assert not r.state_dir.exists()
