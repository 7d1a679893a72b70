"""``scoring-worker run --processes N|auto``: N worker processes under one supervisor.

Each child is a plain ``scoring-worker run`` (the same arguments, its own consumer in the
same group, ``--instance-id`` and ``--worker-id`` suffixed ``-<index>`` so their static
memberships and transactional ids differ) with its HTTP server off. The supervisor:

- serves the one /metrics of the pod: prometheus_client's multiprocess mode, each child
  writing to files in PROMETHEUS_MULTIPROC_DIR (emptied at start), MultiProcessCollector
  summing them, ``mark_process_dead`` when a child exits (its live gauges go; its counters
  stay, so totals never go back);
- serves /healthz and /readyz from the children's reports (worker/stream/child_report.py);
- on SIGTERM or SIGINT (a flag, as everywhere) sends SIGTERM to every child, waits for their
  drains, and exits 0 if they all exited 0;
- restarts a child that exits on its own, under the same index (so the same static member
  takes its partitions back), at most ``RESTART_LIMIT`` times in ``RESTART_WINDOW_S``; past
  that, or when a child exits 2 (a configuration error no restart fixes), it stops the
  others and exits with that failure, and the pod restarts with its back-off.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from worker.config import Settings
from worker.probes import serve
from worker.shutdown import StopFlag
from worker.stream.child_report import ChildrenHealth, ChildState
from worker.stream.metrics import SupervisorMetrics, shared_mode

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESTART_LIMIT = 3
RESTART_WINDOW_S = 300.0
#: Beyond flush_timeout_s, what a child's shutdown may take (closing the consumer).
DRAIN_MARGIN_S = 30.0
CONFIG_ERROR = 2


def process_count(setting: str, cores: int) -> int:
    """``processes``: a number, or ``auto``: one per core this process may use."""
    return cores if setting == "auto" else int(setting)


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, lowered by a cgroup v2 CPU
    quota (a container's CPU limit; 1500m gives 1)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.floor(int(quota) / int(period))))


def child_argv(s: Settings, argv: Sequence[str], index: int) -> list[str]:
    """Child ``index``'s command line: the supervisor's own, then what makes the child one
    of several. Its instance id (so its static group member id and, under exactly-once, its
    transactional id ``<group>-<instance_id>-<index>``) and worker id end in ``-<index>``:
    unique among the pod's children, and the same for a restarted child, which so takes
    its partitions back and fences its killed predecessor's open transaction. Later flags
    win in argparse, so these override the supervisor's."""
    return [*argv, "--processes", "1", "--metrics-port", "0",
            "--instance-id", f"{s.instance_id}-{index}", "--worker-id", f"{s.worker_id}-{index}"]


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes]
    reports: int  # the read end of its report pipe
    state: ChildState = field(default_factory=ChildState)


@dataclass
class Supervisor:
    """Runs ``count`` children of the command line ``argv`` (``run`` and its arguments)."""

    s: Settings
    argv: Sequence[str]
    count: int
    stop: StopFlag
    metrics_dir: Path
    children: list[Child] = field(default_factory=list)
    restarts: deque[float] = field(default_factory=deque)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    metrics: SupervisorMetrics = field(init=False)

    def run(self) -> int:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        # A supervisor itself in multiprocess mode (the variable set outside) writes its own
        # metrics to the files: registering them here too would show them twice.
        self.metrics = SupervisorMetrics(CollectorRegistry() if shared_mode() else registry)
        health = ChildrenHealth(stall_s=self.s.health_stall_s,
                                children=lambda: [c.state for c in self.children])
        server = (serve(self.s.metrics_port, registry, health, self.s.metrics_host)
                  if self.s.metrics_port else None)
        try:
            self.children = [self._spawn(i) for i in range(self.count)]
            log.info("supervising %d worker processes", self.count,
                     extra={"pids": [c.proc.pid for c in self.children]})
            status = self._watch()
            return self._drain(status)
        finally:
            if server is not None:
                server.shutdown()

    def _watch(self) -> int:
        """Until a stop is requested (0) or a child fails for good (its status)."""
        while not self.stop.requested:
            self._listen(0.2)
            for child in self.children:
                code = child.proc.poll()
                if code is not None and not self.stop.requested:
                    failed = self._exited(child, code)
                    if failed is not None:
                        return failed
        return 0

    def _exited(self, child: Child, code: int) -> int | None:
        """A child exited unasked: restart it, or the status to fail with."""
        self._forget(child)
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
            self.restarts.popleft()
        if code == CONFIG_ERROR:
            log.error("worker process %d exited 2 (a configuration error): stopping all",
                      child.index)
            return CONFIG_ERROR
        if len(self.restarts) >= RESTART_LIMIT:
            log.error("worker process %d exited %d, the %d-th exit in %.0f s: stopping all "
                      "(exit 1)", child.index, code, RESTART_LIMIT + 1, RESTART_WINDOW_S)
            return 1
        self.restarts.append(now)
        self.metrics.restarts.inc()
        log.warning("worker process %d (pid %d) exited %d: restarting it", child.index,
                    child.proc.pid, code)
        self.children[child.index] = self._spawn(child.index)
        return None

    def _drain(self, status: int) -> int:
        """SIGTERM to every running child; wait for their drains; kill the ones that
        outlast flush_timeout_s plus a margin. 0 only if every child exited 0."""
        live = [c for c in self.children if c.state.running]
        for c in live:
            c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.s.flush_timeout_s + DRAIN_MARGIN_S
        for c in live:
            try:
                code = c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d did not stop in time: killed", c.index)
                c.proc.kill()
                code = c.proc.wait()
            self._forget(c)
            # Killed by the SIGTERM itself: it came before the child's handler was set
            # (still importing), so the child had nothing to drain.
            code = 0 if code == -signal.SIGTERM else code
            if code != 0 and status == 0:
                log.error("worker process %d exited %d while stopping", c.index, code)
                status = 1
        return status

    def _spawn(self, index: int) -> Child:
        read_end, write_end = os.pipe()
        cmd = [sys.executable, "-m", "worker", *child_argv(self.s, self.argv, index),
               "--supervisor-fd", str(write_end)]
        env = {**os.environ, MULTIPROC_ENV: str(self.metrics_dir)}
        try:
            # Its own session: a terminal's Ctrl-C reaches the supervisor only, which
            # then stops the children in order.
            proc = subprocess.Popen(cmd, env=env, pass_fds=(write_end,),
                                    start_new_session=True)
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        child = Child(index, proc, read_end)
        self.selector.register(read_end, selectors.EVENT_READ, child)
        self.metrics.processes.inc()
        return child

    def _listen(self, timeout: float) -> None:
        """Read whatever reports arrived within ``timeout`` seconds."""
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            try:
                data = os.read(child.reports, 256)
            except BlockingIOError:
                continue
            if data:
                child.state.heard_from(data, time.monotonic())
            else:  # end of file: the child is exiting
                self.selector.unregister(child.reports)
                os.close(child.reports)
                child.reports = -1

    def _forget(self, child: Child) -> None:
        """A child that exited: its live gauges leave the sum, its pipe closes."""
        if not child.state.running:
            return
        child.state.running = False
        self.metrics.processes.dec()
        mark_process_dead(child.proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
        if child.reports >= 0:
            self.selector.unregister(child.reports)
            os.close(child.reports)
            child.reports = -1


def run_processes(s: Settings, argv: Sequence[str], count: int, stop: StopFlag) -> int:
    """The supervisor of ``run --processes N`` with ``count`` children; its exit status."""
    given = os.environ.get(MULTIPROC_ENV)
    metrics_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="scoring-metrics-"))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # multiprocess mode needs it empty at start
        stale.unlink()
    try:
        return Supervisor(s, argv, count, stop, metrics_dir).run()
    finally:
        if not given:
            shutil.rmtree(metrics_dir, ignore_errors=True)
