"""Helpers for integration tests: worker processes and topic readers on the real broker."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

ROOT = Path(__file__).resolve().parents[2]
#: ``scoring-worker`` with the OpenTelemetry SDK's tracer provider (no exporter), so that its
#: spans get ids (``--tracing``): write it to a file and run that instead of ``-m worker``.
TRACED_LAUNCHER = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
from worker.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Out:
    """One consumed message, decoded enough for assertions."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, str]
    partition: int
    offset: int
    timestamp_ms: int


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce (key, value) pairs and wait until the broker has every one."""
    errors: list[str] = []
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    n = 0

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in items:
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        p.poll(0)
    assert p.flush(60) == 0
    assert errors == [], errors[:3]
    return n


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 90.0,
               settle: float = 2.0, committed_only: bool = False) -> list[Out]:
    """Read a topic from the start until ``expect`` messages came, then ``settle`` more seconds.

    The settle time catches extra messages (duplicates) beyond the expected count.
    ``committed_only``: isolation.level=read_committed (exactly-once outputs).
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed_only
                  else "read_uncommitted"})
    c.subscribe([topic])
    got: list[Out] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    while time.monotonic() < deadline:
        if settle_until is None and len(got) >= expect:
            settle_until = time.monotonic() + settle
        if settle_until is not None and time.monotonic() > settle_until:
            break
        for m in c.consume(2000, timeout=0.5):
            if m.error():
                continue
            hdrs = {k: (v or b"").decode() for k, v in (m.headers() or [])}
            got.append(Out(m.key(), m.value(), hdrs, m.partition() or 0, m.offset() or 0,
                           m.timestamp()[1]))
    c.close()
    return got


class WorkerProc:
    """``scoring-worker run`` as a real child process."""

    def __init__(self, args: list[str], log: Path, launcher: Path | None = None) -> None:
        """``launcher``: a script run instead of ``-m worker`` (it calls worker.cli.main)."""
        self.log = log
        self._fh = log.open("ab")
        start = [str(launcher)] if launcher is not None else ["-m", "worker"]
        cmd = [sys.executable, *start, "run", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, cwd=ROOT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free (a local broker's client, controller and extra
    listeners), below the kernel's ephemeral range: a port handed out by bind(0) lies inside
    it, and the broker's JVM takes seconds to start (and a stopped broker seconds to come
    back on the same port), time enough for an outgoing connection to take one of them."""
    rng = random.Random()
    for _ in range(200):
        p = rng.randrange(20_000, 32_000)
        if all(_bindable(p + i) for i in range(n)):
            return p
    raise RuntimeError(f"no {n} free consecutive ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def same_scores(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two runs' ``{id: score}`` (a score is a number, or ``{class: probability}``) equal but
    for the last bits: score-file and the stream cut batches differently, and a matrix of
    another shape can round a row one ulp apart (seen: BLAS for a logistic regression, ONNX
    for a tree ensemble)."""

    def flat(s: dict[str, Any]) -> dict[tuple[str, str], float]:
        return {(k, c): v for k, row in s.items()
                for c, v in (row.items() if isinstance(row, dict) else [("", row)])}

    return a.keys() == b.keys() and flat(a) == pytest.approx(flat(b), rel=1e-12, abs=1e-15)
