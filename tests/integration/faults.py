"""Fault-injection helpers: a broker of the test's own (stopped, killed, restarted
without touching the shared one), a paced feeder of keyed events, a probe recorder,
and a reader that counts every key of the output topics."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, Producer

from tests.integration.helpers import ROOT, Out, free_ports
from worker.devtools.demo import make_events


@dataclass
class PrivateBroker:
    """``scoring-worker kafka-local`` on a port and state folder of the test's own."""

    state: Path
    port: int = field(default_factory=lambda: free_ports(2))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _cli(self, action: str) -> None:
        cmd = [sys.executable, "-m", "worker", "kafka-local", action, "--port", str(self.port),
               "--state-dir", str(self.state)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        self._cli("start")

    def stop(self) -> None:
        """A graceful stop (SIGTERM, the broker shuts down cleanly)."""
        self._cli("stop")

    def kill(self) -> None:
        """kill -9: no shutdown at all."""
        pid_file = self.state / f"kafka-{self.port}" / "broker.pid"
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        time.sleep(0.5)

    def close(self) -> None:
        self._cli("stop")


class Feeder(threading.Thread):
    """Sends ``count`` demo events keyed by their id at ``rate``/s; every ``bad_every``-th
    is malformed (a dead letter), keyed all the same. ``halt()`` ends the stream sooner,
    when the test has seen what it waited for (``sent`` is what went out)."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float,
                 bad_every: int = 0, start_id: int = 0) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.count, self.rate = bootstrap, topic, count, rate
        self.bad_every, self.start_id = bad_every, start_id
        self.sent: list[bytes] = []
        self._halt = threading.Event()

    def halt(self) -> None:
        """Send no more events (the thread then flushes what it sent and ends)."""
        self._halt.set()

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                      "enable.idempotence": True, "message.timeout.ms": 600_000,
                      "logger": logging.getLogger("feeder")})
        events, _ = make_events(np.random.default_rng(self.start_id + 1), self.count,
                                self.start_id, 1_790_000_000_000)
        t0 = time.monotonic()
        for i, e in enumerate(events):
            key = e["id"].encode()
            value = orjson.dumps(e)
            if self.bad_every and i % self.bad_every == self.bad_every - 1:
                value = value[:-9]  # truncated JSON: a decode dead letter
            while True:
                try:
                    p.produce(self.topic, value, key)
                    break
                except BufferError:
                    p.poll(0.05)
            self.sent.append(key)
            if i % 100 == 99:
                if self._halt.is_set():
                    break
                p.poll(0)
                time.sleep(max(0.0, t0 + (i + 1) / self.rate - time.monotonic()))
        assert p.flush(600) == 0


def read_keys(bootstrap: str, topics: list[str], expect: int, committed_only: bool = True,
              timeout: float = 120.0, settle: float = 4.0,
              distinct: bool = False, writers_gone: bool = False) -> Counter[bytes]:
    """Every key on ``topics`` (from the start), counted; stops ``settle`` s after
    ``expect`` keys arrived (so duplicates after that still show) or at ``timeout``.

    ``distinct``: ``expect`` different keys, so duplicates do not stand in for records
    still missing. ``writers_gone``: nothing writes to ``topics`` any more (the workers
    were stopped), so nothing can come after the end: stop at the end of every partition
    instead of waiting ``settle`` s (read_committed: its end is the last stable offset,
    and a stopped worker left no transaction open)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"keys-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "enable.partition.eof": writers_gone,
                  "isolation.level": "read_committed" if committed_only
                  else "read_uncommitted"})
    c.subscribe(topics)
    keys: Counter[bytes] = Counter()
    at_end: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    until: float | None = None
    while time.monotonic() < deadline and (until is None or time.monotonic() < until):
        for m in c.consume(5000, 0.5):
            err = m.error()
            if err is None:
                keys[m.key() or b""] += 1
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add((m.topic() or "", m.partition() or 0))
        if until is None and (len(keys) if distinct else sum(keys.values())) >= expect:
            until = time.monotonic() + settle
        if writers_gone and until is not None and _every_partition(c, at_end):
            break
    c.close()
    return keys


def _every_partition(c: Consumer, at_end: set[tuple[str, int]]) -> bool:
    """Whether every partition assigned to ``c`` was read to its end."""
    assigned = {(tp.topic, tp.partition) for tp in c.assignment()}
    return bool(assigned) and assigned <= at_end


class ProbeLog(threading.Thread):
    """Polls /healthz and /readyz every ``every`` s: (seconds since start, health, ready)."""

    def __init__(self, port: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.every = port, every
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, int, int]] = []
        self.stopped = False

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=1) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    def run(self) -> None:
        while not self.stopped:
            at = time.monotonic() - self.t0
            self.rows.append((round(at, 1), self.status("/healthz"), self.status("/readyz")))
            time.sleep(max(0.0, self.every - (time.monotonic() - self.t0 - at)))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def transitions(self) -> list[tuple[float, int, int]]:
        """The rows where either probe changed."""
        out: list[tuple[float, int, int]] = []
        for row in self.rows:
            if not out or row[1:] != out[-1][1:]:
                out.append(row)
        return out


def lost_and_duplicated(sent: list[bytes], seen: Counter[bytes]) -> tuple[int, int]:
    want = set(sent)
    return len(want - set(seen)), sum(n - 1 for k, n in seen.items() if k in want and n > 1)


def resumed_after(outputs: Iterable[Out], since_ms: int) -> float | None:
    """Seconds from ``since_ms`` (wall clock, a kill) to the first output produced after it.

    An output's timestamp is the time its worker produced it (CreateTime), so outputs of
    the killed process, however late a reader sees them, never count."""
    later = [o.timestamp_ms for o in outputs if o.timestamp_ms > since_ms]
    return (min(later) - since_ms) / 1000 if later else None
