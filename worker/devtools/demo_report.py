"""The picture ``make demo`` leaves: report.html (and report.png, with Chromium).

report.html is the monitor's own status page with the run's last ``/api/status`` and the
run's summary (throughput, latency, rolling figures) written into it, so it opens anywhere,
offline, after the demo's processes are gone. report.png is Chromium's picture of it.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from worker.devtools import browser
from worker.monitor_app.status_page import page_html


def fetch_status(port: int) -> dict[str, Any] | None:
    """The monitor's /api/status, or None when it cannot be read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
            return dict(orjson.loads(r.read()))
    except (OSError, orjson.JSONDecodeError):
        return None


def _script_json(value: object) -> str:
    # Inside <script>, "</" could end the element early.
    return orjson.dumps(value).decode().replace("</", "<\\/")


def write_report(folder: Path, title: str, rows: dict[str, Any],
                 status: dict[str, Any] | None) -> list[Path]:
    """Write report.html (and report.png when Chromium is installed); the files written."""
    report = _script_json({"title": title, "rows": rows})
    data = f"<script>window.STATUS = {_script_json(status)};\nwindow.REPORT = {report};</script>\n"
    page = page_html().decode()
    html = folder / "report.html"
    html.write_text(page.replace("<script>", data + "<script>", 1))
    written = [html]
    if browser.chromium() is not None:
        try:
            written.append(browser.screenshot(html.resolve().as_uri(), folder / "report.png",
                                              size=(1280, 1600), budget_ms=2000))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"report.png not written: {exc}")
    return written
