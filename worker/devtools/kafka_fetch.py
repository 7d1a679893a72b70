"""The local broker's jars: resolved once through the machine's ``mvn``, with progress.

A first start on a fresh machine downloads Apache Kafka and its dependencies (about
45 MB of jars, plus Maven's own plugins) from Maven Central: one to three minutes.
Maven's output is read line by line and turned into a few progress lines (each large
file, a running total every few seconds, the total at the end), so nobody watches a
silent terminal for minutes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from worker.errors import KafkaLocalError

Progress = Callable[[str], None]
Alive = Callable[[], bool]
_DOWNLOADED: Final = re.compile(r"Downloaded from \S+: \S+/([^/\s]+) \(([\d.,]+) (B|kB|KB|MB|GB)")
_COPYING: Final = re.compile(r"Copying (\S+\.jar) to")
_UNITS: Final = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
BIG_FILE: Final = 1_000_000  # files above this get a line of their own
EVERY_S: Final = 5.0


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


@dataclass
class MavenProgress:
    """Turns Maven's output lines into progress lines."""

    say: Progress
    clock: Callable[[], float] = time.monotonic
    files: int = 0
    size: float = 0.0
    copied: int = 0
    last: float = field(default_factory=time.monotonic)

    def feed(self, line: str) -> None:
        if m := _DOWNLOADED.search(line):
            n = float(m.group(2).replace(",", "")) * _UNITS[m.group(3)]
            self.files += 1
            self.size += n
            if n >= BIG_FILE:
                self.say(f"downloaded {m.group(1)} ({_mb(n)}; {self.files} files, "
                         f"{_mb(self.size)} so far)")
                self.last = self.clock()
        elif _COPYING.search(line):
            self.copied += 1
        if self.clock() - self.last >= EVERY_S:
            self.last = self.clock()
            self.say(f"still resolving: {self.files} files downloaded ({_mb(self.size)}), "
                     f"{self.copied} jars copied")


def check_tools(no_java: str) -> None:
    """Fail with one actionable line when Java 17+ or Maven is missing."""
    missing = [t for t in ("java", "mvn") if shutil.which(t) is None]
    if missing:
        raise KafkaLocalError(no_java.format(missing=" and ".join(missing)))
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if m and int(m.group(1)) < 17:
        raise KafkaLocalError(no_java.format(missing=f"Java 17+ (found Java {m.group(1)})"))


def resolve(pom_text: str, lib_dir: Path, coordinate: str, say: Progress) -> None:
    """Copy the pom's runtime dependencies into ``lib_dir`` (atomically), reporting progress."""
    lib_dir.parent.mkdir(parents=True, exist_ok=True)
    pom = lib_dir.parent / "pom.xml"
    pom.write_text(pom_text)
    staging = lib_dir.parent / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    say(f"first start: resolving {coordinate} and its dependencies from Maven Central "
        f"into {lib_dir.parent} (about 45 MB; one to three minutes on a fresh machine, "
        "later starts take about 10 s)")
    t0 = time.monotonic()
    cmd = ["mvn", "-B", "-f", str(pom), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    run_maven(cmd, coordinate, say)
    shutil.rmtree(lib_dir, ignore_errors=True)
    staging.rename(lib_dir)
    jars = list(lib_dir.glob("*.jar"))
    total = sum(j.stat().st_size for j in jars)
    say(f"resolved {len(jars)} jars ({_mb(total)}) in {time.monotonic() - t0:.0f}s")


def run_maven(cmd: list[str], coordinate: str, say: Progress, cwd: Path | None = None) -> None:
    """Run Maven (in ``cwd``: without a pom it writes plugin markers there), turning its
    output into progress lines and its errors into one line."""
    progress = MavenProgress(say)
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", cwd=cwd) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress.feed(line)
            tail = [*tail[-7:], line.rstrip()]
    if proc.returncode != 0:
        errors = [t for t in tail if "ERROR" in t][:3] or tail[-3:]
        raise KafkaLocalError(f"could not resolve {coordinate} from Maven Central: "
                              + " | ".join(errors))
