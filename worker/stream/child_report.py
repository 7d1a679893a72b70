"""How a process of ``run --processes N`` tells its supervisor how it is: one byte a second.

The child writes its probe state (``Report`` flags) to a pipe the supervisor gave it; the
supervisor's probes combine the last byte of every child (``ChildrenHealth``). A pipe needs
no port per child and no file, and it ends with either side: a child that exits closes it
(end of file), and a supervisor that is killed makes the child's next write fail, which the
child takes as SIGTERM (drain, commit, exit), so no orphan goes on scoring unwatched.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntFlag

from worker.probes import Health
from worker.shutdown import StopFlag

#: How often a child reports; the supervisor holds a report for health_stall_s.
REPORT_EVERY_S = 1.0


class Report(IntFlag):
    """A child's probe state in one byte."""

    HEALTHY = 1  # its loop turns (its own /healthz)
    SERVING = 2  # model loaded, broker and registry reachable, no restore under way
    ASSIGNED = 4  # owns partitions (a child beyond the partition count stands by)


def state_of(health: Health) -> Report:
    flags = Report(0)
    if health.healthy():
        flags |= Report.HEALTHY
    if health.serving():
        flags |= Report.SERVING
    if health.assigned:
        flags |= Report.ASSIGNED
    return flags


def start_reporting(fd: int, health: Health, stop: StopFlag,
                    every_s: float = REPORT_EVERY_S) -> threading.Thread:
    """The child's side: a daemon thread writing ``state_of(health)`` to ``fd`` every
    ``every_s``; a write that fails (the supervisor is gone) requests the stop."""

    def loop() -> None:
        try:
            while True:
                os.write(fd, bytes([state_of(health)]))
                time.sleep(every_s)
        except OSError:
            stop()

    thread = threading.Thread(target=loop, name="supervisor-report", daemon=True)
    thread.start()
    return thread


@dataclass
class ChildState:
    """The supervisor's view of one child: its last report and when it came (None: the
    child is starting and has said nothing yet)."""

    flags: Report = field(default_factory=lambda: Report(0))
    heard: float | None = None
    running: bool = True

    def heard_from(self, data: bytes, now: float) -> None:
        self.flags, self.heard = Report(data[-1]), now


@dataclass
class ChildrenHealth(Health):
    """The supervisor's probes. Healthy while every child runs and its last report,
    fresher than ``stall_s``, says healthy (a child still starting counts as healthy:
    its start-up has its own bound, start_timeout_s). Ready while every child is serving
    and at least one owns partitions."""

    children: Callable[[], Sequence[ChildState]] = list

    def healthy(self) -> bool:
        now = self.clock()
        return all(c.running and (c.heard is None or (
            now - c.heard <= self.stall_s and Report.HEALTHY in c.flags))
            for c in self.children())

    def ready(self) -> bool:
        children = self.children()
        return (bool(children) and all(self._trouble(c) is None for c in children)
                and any(Report.ASSIGNED in c.flags for c in children))

    def not_ready(self) -> list[str]:
        children = self.children()
        if not children:
            return ["no processes"]
        reasons = [f"process {i}: {trouble}" for i, c in enumerate(children)
                   if (trouble := self._trouble(c)) is not None]
        if not any(Report.ASSIGNED in c.flags for c in children):
            reasons.append("no process owns partitions")
        return reasons

    def _trouble(self, c: ChildState) -> str | None:
        """What keeps a child from serving (None: it serves): running, heard from lately,
        its loop turning and ready but for partitions."""
        if not c.running:
            return "not running"
        if c.heard is None:
            return "starting"
        if self.clock() - c.heard > self.stall_s:
            return "no report"
        return None if (Report.HEALTHY | Report.SERVING) in c.flags else "not serving"

