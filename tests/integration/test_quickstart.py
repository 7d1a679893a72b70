"""The README's quick start, run step by step exactly as written, against the real broker.
(The docs site's Getting started page includes this very block: tests/unit/docs/test_docs.py.)

The lines between ``<!-- quickstart -->`` and ``<!-- /quickstart -->`` run in a fresh folder
with the project's ``scoring-worker`` on PATH: each must exit 0, except the one the README
runs "in a second terminal" (the worker), which runs beside the others and is stopped with
Ctrl-C (SIGINT) at the end, as the README says. The ``curl`` line is repeated until the
worker has scored the 2,000 events the quick start sends. Quick starts from several
checkouts on one machine share the broker, the topic and the group, so they take turns.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT

LOCK = Path("/tmp/scoring-worker-quickstart.lock")


def quickstart_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```\n<!-- /quickstart -->", text, re.S)
    assert block, "README.md has no quick start block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture
def one_at_a_time() -> Iterator[None]:
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_quick_start_works_as_written(
    kafka_bootstrap: str, tmp_path: Path, one_at_a_time: None
) -> None:
    if kafka_bootstrap != "127.0.0.1:9092":
        pytest.skip("the quick start names the default broker, 127.0.0.1:9092")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("SCORING_") or "TEST" in k}
    lines = quickstart_lines()
    assert any("second terminal" in line for line in lines)
    worker: subprocess.Popen[str] | None = None
    log = (tmp_path / "worker.log").open("w")
    try:
        for line in lines:
            if "second terminal" in line:
                worker = subprocess.Popen(["bash", "-c", f"exec {line.split('#')[0]}"],
                                          cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                          stderr=log, text=True)
            elif line.startswith("curl"):
                _until_scored(line, tmp_path, env, 2000, worker)
            else:
                done = _shell(line, tmp_path, env)
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
                if "models list" in line:
                    assert "fraud-demo\t1\tcurrent" in done.stdout
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGINT)  # the README's Ctrl-C
            out, _ = worker.communicate(timeout=60)
        log.close()
    assert worker is not None and worker.returncode == 0, (tmp_path / "worker.log").read_text()
    assert re.search(r"\d+ consumed, \d+ scored, 0 dead-lettered", out), out


def _until_scored(line: str, cwd: Path, env: dict[str, str], n: int,
                  worker: subprocess.Popen[str] | None) -> None:
    deadline = time.monotonic() + 120
    shown = ""
    while time.monotonic() < deadline:
        assert worker is None or worker.poll() is None, "the worker stopped"
        shown = _shell(line, cwd, env).stdout
        m = re.search(r"^scoring_events_scored_total (\S+)$", shown, re.M)
        if m and float(m.group(1)) >= n:
            return
        time.sleep(1)
    raise AssertionError(f"the worker did not score {n} events in 120 s:\n{shown}")
