"""A real ``mlflow server`` for the tests: a SQLite backend and a local artifact folder in
a temporary folder, on a loopback port below the ephemeral range; stopped (and started
again on the same port and data, for the outage test) by the tests, torn down at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import free_ports

#: The tests stay offline: MLflow 3 otherwise reports usage to its makers.
OFFLINE = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_ports(1)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.root / 'db.sqlite'}",
             "--artifacts-destination", str(self.root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
            env={**os.environ, **OFFLINE})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log()[-2000:]}")
            if self.healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"mlflow server not up after {timeout:.0f}s: {self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop the server and the workers it started (its own process group)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        # The server's job runners (huey consumers) can outlive it: none is left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    old = {k: os.environ.get(k) for k in OFFLINE}
    os.environ.update(OFFLINE)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
