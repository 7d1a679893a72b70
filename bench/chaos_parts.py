"""What a chaos run (bench/chaos.py) drives and watches: a broker of its own, the scoring
processes, labeled traffic, and a reader of every output.

Everything here talks to the run's own broker on a port of its own: the run stops, kills
and pauses it, so it is never the shared one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from procstat import PEAK, rss_mib  # bench/procstat.py: this folder is on sys.path

from worker.devtools.demo import make_events
from worker.kafka_io.watch import quiet_transport_lines

ROOT = Path(__file__).resolve().parents[1]


def _quiet(name: str) -> logging.Logger:
    """The run's own clients' logger, without librdkafka's line per reconnection attempt
    (every broker fault printed dozens to the run's stderr)."""
    quiet_transport_lines(name)
    return logging.getLogger(name)


#: The poison record's size: twice what a worker reads (it is dead-lettered unread).
POISON_BYTES = 2 * 1024 * 1024
#: A /readyz dip this long gets the process's stacks into its log (SIGUSR1), once a dip.
STUCK_DUMP_S = 60.0
#: Outputs are counted by (partition, model_version, CreateTime // BUCKET_MS).
BUCKET_MS = 100


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_ports(n: int) -> int:
    """``n`` consecutive free ports below the ephemeral range (a stopped broker comes back
    on its port; an outgoing connection must not take it meanwhile)."""
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


@dataclass
class Broker:
    """``scoring-worker kafka-local`` on a port and state folder of the run's own."""

    state: Path
    port: int = field(default_factory=lambda: free_ports(2))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _cli(self, action: str) -> None:
        cmd = [sys.executable, "-m", "worker", "kafka-local", action, "--port", str(self.port),
               "--state-dir", str(self.state)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-local {action}: {done.stdout}{done.stderr}")

    def pid(self) -> int:
        return int((self.state / f"kafka-{self.port}" / "broker.pid").read_text().strip())

    def start(self) -> None:
        self._cli("start")

    def stop(self) -> None:
        self._cli("stop")

    def kill(self) -> None:
        os.kill(self.pid(), signal.SIGKILL)
        time.sleep(0.5)

    def pause(self, seconds: float) -> None:
        """SIGSTOP for ``seconds``: a stand-in for a network partition."""
        pid = self.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def alive(self) -> bool:
        try:
            os.kill(self.pid(), 0)
        except (OSError, ValueError):
            return False
        return True


@dataclass
class Proc:
    """One ``scoring-worker`` child (``run`` or ``monitor``) and what is known of it."""

    name: str
    args: list[str]
    logs: Path
    port: int = field(default_factory=lambda: free_ports(1))
    popen: subprocess.Popen[bytes] | None = None
    peak_mib: float = 0.0
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    #: Its log's last lines when it did not stop on SIGTERM in time (with its stacks).
    stuck: list[str] = field(default_factory=list)
    #: Its log's last lines when it stopped on SIGTERM with a status other than 0.
    unclean: list[str] = field(default_factory=list)
    #: Each change of its /readyz answer: (wall ms, body).
    readiness: list[tuple[int, str]] = field(default_factory=list)
    unready_since: float | None = None
    dumped: bool = False

    def start(self) -> None:
        log = (self.logs / f"{self.name}.{self.starts}.log").open("wb")
        cmd = [sys.executable, "-m", "worker", *self.args, "--metrics-port", str(self.port),
               "--metrics-host", "127.0.0.1"]
        self.popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.starts += 1

    def log_tail(self, lines: int = 8) -> list[str]:
        """The last lines of its latest run's log."""
        path = self.logs / f"{self.name}.{self.starts - 1}.log"
        return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def sample(self) -> None:
        if self.running() and self.popen is not None:
            with contextlib.suppress(OSError):  # it ended meanwhile
                self.peak_mib = max(self.peak_mib, rss_mib(self.popen.pid, PEAK))

    def kill9(self) -> None:
        self.sample()
        assert self.popen is not None
        self.popen.kill()
        self.exit_codes.append(self.popen.wait(30))

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM and wait: its exit status."""
        self.sample()
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGUSR1)  # its threads' stacks into its log
            time.sleep(1.0)
            self.popen.kill()
            code = self.popen.wait(30)
            self.stuck = self.log_tail(60)
        if code != 0 and not self.stuck:
            self.unclean = self.log_tail(40)
        self.exit_codes.append(code)
        return code

    def ready(self) -> int:
        """/readyz's status; 0 when nothing answers. Each change of its answer is kept
        in ``readiness`` (wall ms, body: a 503 names what keeps it)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                code, body = int(r.status), r.read()
        except urllib.error.HTTPError as e:
            code, body = int(e.code), e.read()
        except OSError:
            code, body = 0, b"no answer"
        text = body.decode(errors="replace").strip()
        if not self.readiness or self.readiness[-1][1] != text:
            self.readiness.append((now_ms(), text))
        self._dump_if_stuck(code)
        return code

    def _dump_if_stuck(self, code: int) -> None:
        """Once per dip of /readyz longer than STUCK_DUMP_S: SIGUSR1, its threads' stacks
        into its log (a worker of the second hour said 'broker not reachable' for 7
        minutes and logged nothing: where it waited is the question)."""
        if code == 200 or self.popen is None:
            self.unready_since, self.dumped = None, False
            return
        now = time.monotonic()
        self.unready_since = self.unready_since or now
        if now - self.unready_since >= STUCK_DUMP_S and not self.dumped:
            with contextlib.suppress(OSError):
                self.popen.send_signal(signal.SIGUSR1)
            self.dumped = True


class Traffic(threading.Thread):
    """Demo events keyed by id at ``rate``/s, each one's label ``label_delay`` s later."""

    def __init__(self, bootstrap: str, topic: str, labels_topic: str, rate: float,
                 label_delay: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.topic, self.labels_topic, self.rate = topic, labels_topic, rate
        self.label_delay, self.seed = label_delay, seed
        self.sent: list[bytes] = []
        self.failed: list[str] = []
        self.finish = threading.Event()
        self._extra: deque[tuple[bytes, bytes]] = deque()
        #: Event -> input value; swapped while running (the registry fault's new schema).
        self.encode: Callable[[dict[str, Any]], bytes] = orjson.dumps
        self._p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                            "enable.idempotence": True, "message.timeout.ms": 900_000,
                            "message.max.bytes": 2 * POISON_BYTES,
                            "logger": _quiet("chaos-traffic")})

    def poison(self, n: int) -> None:
        """A record of ``POISON_BYTES`` on the input: a dead letter, never a crash."""
        self._extra.append((f"poison-{n}".encode(), b"{" + b" " * POISON_BYTES + b"}"))

    def _send(self, topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                self._p.produce(topic, value, key, on_delivery=self._delivered)
                return
            except BufferError:
                self._p.poll(0.05)

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed.append(str(err))

    def run(self) -> None:
        rng = np.random.default_rng(self.seed)
        labels: deque[tuple[float, bytes, bytes]] = deque()
        t0, i = time.monotonic(), 0
        while not self.finish.is_set():
            events, ys = make_events(rng, 100, i, now_ms())
            for e, y in zip(events, ys, strict=True):
                key = e["id"].encode()
                self._send(self.topic, self.encode(e), key)
                self.sent.append(key)
                labels.append((time.monotonic() + self.label_delay, key,
                               orjson.dumps({"id": e["id"], "label": y})))
            i += len(events)
            while self._extra:
                key, value = self._extra.popleft()
                self._send(self.topic, value, key)
                self.sent.append(key)
            while labels and labels[0][0] <= time.monotonic():
                _, key, value = labels.popleft()
                self._send(self.labels_topic, value, key)
            self._p.poll(0)
            time.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
        for _, key, value in labels:
            self._send(self.labels_topic, value, key)
        left = self._p.flush(900)
        if left:
            self.failed.append(f"{left} records not delivered at the end")


def fields_of(value: bytes | None) -> tuple[str, int | None]:
    """An output's model_version ("?" when it has none) and the input partition it answers
    (its lineage ``source``; None without one)."""
    try:
        out = orjson.loads(value or b"{}")
        v, source = out.get("model_version"), out.get("source") or {}
        return ("?" if v is None else str(v)), source.get("partition")
    except (orjson.JSONDecodeError, AttributeError):
        return "?", None


class Outputs(threading.Thread):
    """Reads the outputs and dead letters from their start: each key's count, and when each
    output partition, and each input partition its outputs answer, got its outputs (their
    CreateTime: when a worker produced them), by model_version."""

    def __init__(self, bootstrap: str, outputs: str, dlq: str, committed_only: bool) -> None:
        super().__init__(daemon=True)
        self.outputs = outputs
        self.keys: Counter[bytes] = Counter()
        self.stamps: dict[int, list[int]] = {}
        #: The same by input partition (the outputs' lineage): a worker that stalls shows
        #: here while the others keep producing to every output partition.
        self.input_stamps: dict[int, list[int]] = {}
        self.versions: Counter[tuple[int, str, int]] = Counter()
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # the run reads what this thread writes
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-{now_ms()}",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False,
                            "isolation.level": "read_committed" if committed_only
                            else "read_uncommitted",
                            "logger": _quiet("chaos-outputs")})
        # Assigned, not subscribed: a group member that commits nothing starts again from
        # the beginning after each rebalance (a broker restart), and counted every output
        # again (the first hour's account said 2,367,008 duplicates for 836,500).
        md = self._c.list_topics(timeout=30)
        self._c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in (outputs, dlq)
                        for p in md.topics[t].partitions])

    def run(self) -> None:
        while not self.stopped.is_set():
            msgs = [m for m in self._c.consume(5000, 0.5) if m.error() is None]
            with self._lock:
                for m in msgs:
                    self.keys[m.key() or b""] += 1
                    if m.topic() == self.outputs:
                        part, ts = m.partition() or 0, m.timestamp()[1]
                        self.stamps.setdefault(part, []).append(ts)
                        version, source = fields_of(m.value())
                        self.versions[(part, version, ts // BUCKET_MS)] += 1
                        if source is not None:
                            self.input_stamps.setdefault(source, []).append(ts)
        self._c.close()

    def seen(self) -> Counter[bytes]:
        with self._lock:
            return Counter(self.keys)

    def by_version(self) -> Counter[tuple[int, str, int]]:
        with self._lock:
            return Counter(self.versions)

    def resumed_after(self, since_ms: int, by_input: bool = False) -> float | None:
        """Seconds until every output partition (``by_input``: every input partition) had an
        output produced after ``since_ms``."""
        with self._lock:
            firsts = [min((t for t in ts if t > since_ms), default=None)
                      for ts in (self.input_stamps if by_input else self.stamps).values()]
        if not firsts or None in firsts:
            return None
        return (max(t for t in firsts if t is not None) - since_ms) / 1000
