"""Run a scoring-worker command with tracemalloc on, writing what grew to a file.

    python bench/traced.py OUT.txt monitor --bootstrap ...

Every ``TRACED_EVERY_S`` seconds (default 60) a snapshot of the Python heap is compared
with the one taken at the first interval (after start-up and the first minute's
windows): the 25 allocation sites that grew most, by line, and the total. Only Python
allocations are seen (not RocksDB's, librdkafka's or glibc's arenas); tracemalloc costs
time, so rates measured under it are not the product's.

``TRACED_MODE=heap``: no tracemalloc (so no slowdown). Every ``TRACED_EVERY_S`` seconds
(default 10) one JSON line of where the resident memory is: the RSS, glibc's heap
(``mallinfo2``: in use, free inside the arenas, mmapped chunks) and Python's small-object
allocator (its arenas and the bytes of live blocks in them, from
``sys._debugmallocstats``). RSS minus glibc's in-use bytes is what fragmentation or
memory outside malloc (mmaps, thread stacks) holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson


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


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator: arenas held and bytes in live blocks (MiB)."""
    fd, name = tempfile.mkstemp()
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        sys._debugmallocstats()  # writes to the C stderr
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    text = Path(name).read_text()
    os.unlink(name)
    out = {}
    for key, pattern in (("arenas", r"arenas \* \d+ bytes/arena\s*=\s*([\d,]+)"),
                         ("used", r"# bytes in allocated blocks\s*=\s*([\d,]+)")):
        m = re.search(pattern, text)
        if m:
            out[key] = int(m.group(1).replace(",", ""))
    return {"py_arenas_mib": round(out.get("arenas", 0) / 2**20, 1),
            "py_blocks_mib": round(out.get("used", 0) / 2**20, 1)}


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def heap(out: Path, every_s: float) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _Mallinfo2
    start = time.monotonic()
    while True:
        time.sleep(every_s)
        mi = libc.mallinfo2()
        line: dict[str, Any] = {
            "s": round(time.monotonic() - start), "rss_mib": round(_rss_mib(), 1),
            "malloc_used_mib": round(mi.uordblks / 2**20, 1),
            "malloc_free_mib": round(mi.fordblks / 2**20, 1),
            "malloc_mmap_mib": round(mi.hblkhd / 2**20, 1), **_pymalloc()}
        with out.open("ab") as fh:
            fh.write(orjson.dumps(line) + b"\n")


def main() -> int:
    out = Path(sys.argv[1])
    if os.environ.get("TRACED_MODE") == "heap":
        every = float(os.environ.get("TRACED_EVERY_S", "10"))
        threading.Thread(target=heap, args=(out, every), daemon=True).start()
    else:
        tracemalloc.start(1)
        every = float(os.environ.get("TRACED_EVERY_S", "60"))
        threading.Thread(target=watch, args=(out, every), daemon=True).start()
    from worker.cli import main as cli

    return cli(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
