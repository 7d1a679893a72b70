"""SIGTERM and SIGINT only set a flag; the loops check it between batches. SIGUSR1 writes
every thread's stack to stderr (the log), for a process that seems stuck.

A process still running STOP_GRACE_S after SIGTERM writes its threads' stacks and one
line to the log and exits 1 by itself. Python runs a signal handler only when the main
thread is back in Python code, so a call blocked in librdkafka (a transactional call
whose coordinator went away, librdkafka#5456) would otherwise never see the flag: a
chaos run saw the monitor still running 90 s after SIGTERM, following a broker kill.
A process ended mid-batch is a crash, which both delivery modes are built for.

The handlers are installed by the CLI before anything slow (imports, model
loading, joining the group), so a stop requested during start-up is honoured
too: the process then exits cleanly instead of dying of the default action.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Final

#: Seconds between SIGTERM and the process ending itself when its loop has not stopped.
STOP_GRACE_S: Final = 60.0


class StopRequested(Exception):
    """Raised by a start-up wait when SIGTERM or SIGINT arrives; the command exits 0."""


class StopFlag:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.requested = True


STOP = StopFlag()


def install(grace_s: float = STOP_GRACE_S) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, STOP)
    # Handled in C by faulthandler, so it answers even while Python code is stuck in a call.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # The C-level handler writes each signal's number here at once, whatever the main
    # thread is doing; a thread of its own reads it.
    global _disarmed
    _disarmed = threading.Event()
    read, write = socket.socketpair()
    write.setblocking(False)
    signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
    threading.Thread(target=_end_if_stuck, args=(read, write, grace_s, _disarmed),
                     daemon=True, name="stop-watch").start()


_disarmed = threading.Event()


def disarm() -> None:
    """No ending by itself after SIGTERM (a test process that sent itself one)."""
    _disarmed.set()
    signal.set_wakeup_fd(-1)


def _end_if_stuck(read: socket.socket, write: socket.socket, grace_s: float,
                  disarmed: threading.Event) -> None:
    stops = {int(signal.SIGTERM), int(signal.SIGINT)}
    while not stops & set(read.recv(64)):
        pass
    # A process that stops in time ends this thread with it.
    if disarmed.wait(grace_s):
        return
    print(f"scoring-worker: error: still running {grace_s:g}s after SIGTERM; every "
          "thread's stack follows, then exit 1 (a call into the Kafka client did not "
          "return)", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(1)
