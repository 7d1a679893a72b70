"""The shell's clocks. The pure core never reads a clock: the shell reads one here and
passes the time in."""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Unix time in milliseconds (the unit of Kafka timestamps and of every record)."""
    return time.time_ns() // 1_000_000
