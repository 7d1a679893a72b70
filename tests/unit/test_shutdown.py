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
        shutdown.disarm()  # this test process does not end itself 60 s later
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


def test_a_process_still_running_after_sigterm_ends_itself_with_its_stacks() -> None:
    """A main thread blocked in a call never runs the Python handler: the stop watch
    ends the process after its grace, exit 1, with one line and every thread's stack."""
    code = ("import os, signal, time\nfrom worker import shutdown\n"
            "shutdown.install(grace_s=0.5)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(30)  # stands for a call into librdkafka that does not return\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=20)
    assert done.returncode == 1
    assert "scoring-worker: error: still running 0.5s after SIGTERM" in done.stderr
    assert "time.sleep(30)" in done.stderr or "<string>" in done.stderr


def test_a_process_that_stops_in_time_exits_as_it_chose() -> None:
    code = ("import os, signal, time\nfrom worker import shutdown\n"
            "shutdown.install(grace_s=5)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.2)\nassert shutdown.STOP.requested\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=20)
    assert done.returncode == 0, done.stderr
    assert "still running" not in done.stderr
