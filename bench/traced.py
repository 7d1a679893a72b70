"""Run a scoring-worker command with tracemalloc on, writing what grew to a file.

    python bench/traced.py OUT.txt monitor --bootstrap ...

Every ``TRACED_EVERY_S`` seconds (default 60) a snapshot of the Python heap is compared
with the one taken at the first interval (after start-up and the first minute's
windows): the 25 allocation sites that grew most, by line, and the total. Only Python
allocations are seen (not RocksDB's, librdkafka's or glibc's arenas); tracemalloc costs
time, so rates measured under it are not the product's.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def watch(out: Path, every_s: float) -> None:
    time.sleep(every_s)
    first = tracemalloc.take_snapshot()
    start = time.monotonic()
    while True:
        time.sleep(every_s)
        now = tracemalloc.take_snapshot()
        stats = now.compare_to(first, "lineno")
        total, traced = sum(s.size_diff for s in stats), tracemalloc.get_traced_memory()[0]
        lines = [f"== {time.monotonic() - start:.0f}s after the first snapshot: "
                 f"{total / 2**20:+.1f} MiB, {traced / 2**20:.1f} MiB traced now"]
        lines += [str(s) for s in stats[:25]]
        with out.open("a") as fh:
            fh.write("\n".join(lines) + "\n")


def main() -> int:
    out = Path(sys.argv[1])
    tracemalloc.start(1)
    every = float(os.environ.get("TRACED_EVERY_S", "60"))
    threading.Thread(target=watch, args=(out, every), daemon=True).start()
    from worker.cli import main as cli

    return cli(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
