"""What the benchmarks read of a process from /proc: its resident set size, and the CPU
time it used (all its threads: the interpreter's and librdkafka's)."""

from __future__ import annotations

import os
from pathlib import Path

#: Resident set size now, and its peak ("high water mark") since the process started.
NOW, PEAK = "VmRSS", "VmHWM"
#: The anonymous part of the resident set (heap, arenas, RocksDB and librdkafka buffers).
ANON = "RssAnon"


def rss_mib(pid: int, field: str) -> float:
    """``field`` (NOW or PEAK) of process ``pid``, in MiB; NaN when /proc does not say."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
