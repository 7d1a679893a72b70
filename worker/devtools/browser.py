"""Headless Chromium (Debian's ``chromium`` package, ``make tools``) for pictures of pages.

Used by the demo's report and the status page's test. Every run gets a fresh profile, and
the flags keep Chromium off the network (no background requests, no component updates):
on a closed network those would only fail. ``--virtual-time-budget`` lets the page's
scripts run and its fetches finish before the DOM or the picture is taken.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio")


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout_s: float) -> str:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (make tools installs it)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout


def dump_dom(url: str, budget_ms: int = 8000, timeout_s: float = 90.0) -> str:
    """The page's DOM, serialized, once its scripts have run for ``budget_ms`` (virtual)."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout_s)


def screenshot(url: str, out: Path, size: tuple[int, int] = (1280, 1400),
               budget_ms: int = 8000, timeout_s: float = 90.0) -> Path:
    """A PNG of the page at ``size`` (width, height in CSS pixels)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
          f"--screenshot={out.resolve()}", url], timeout_s)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out
