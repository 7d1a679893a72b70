"""Signals: SIGTERM only sets the stop flag; SIGUSR1 writes every thread's stack to stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.unit.helpers import ROOT
from worker import shutdown


def test_sigterm_sets_the_flag_and_nothing_else() -> None:
    before = signal.getsignal(signal.SIGTERM)
    try:
        shutdown.install()
        shutdown.STOP.requested = False
        os.kill(os.getpid(), signal.SIGTERM)
        assert shutdown.STOP.requested
    finally:
        shutdown.STOP.requested = False
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_sigusr1_dumps_the_stacks_of_a_process_stuck_in_a_call() -> None:
    code = ("import os, signal, threading, time\nfrom worker import shutdown\n"
            "shutdown.install()\n"
            "threading.Thread(target=lambda: time.sleep(5), name='poller', daemon=True).start()\n"
            "os.kill(os.getpid(), signal.SIGUSR1)\ntime.sleep(0.5)\nprint('alive')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr
    assert "Current thread 0x" in done.stderr, done.stderr  # the main thread
    assert "Thread 0x" in done.stderr.replace("Current thread", ""), done.stderr  # the poller
    assert 'File "<string>", line 4 in <lambda>' in done.stderr, done.stderr
