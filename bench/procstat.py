"""What the benchmarks read of a process: its resident set size from /proc."""

from __future__ import annotations

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
