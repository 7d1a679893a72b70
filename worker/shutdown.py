"""SIGTERM and SIGINT only set a flag; the loops check it between batches. SIGUSR1 writes
every thread's stack to stderr (the log), for a process that seems stuck.

The handlers are installed by the CLI before anything slow (imports, model
loading, joining the group), so a stop requested during start-up is honoured
too: the process then exits cleanly instead of dying of the default action.
"""

from __future__ import annotations

import faulthandler
import signal
from types import FrameType


class StopRequested(Exception):
    """Raised by a start-up wait when SIGTERM or SIGINT arrives; the command exits 0."""


class StopFlag:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.requested = True


STOP = StopFlag()


def install() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, STOP)
    # Handled in C by faulthandler, so it answers even while Python code is stuck in a call.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
