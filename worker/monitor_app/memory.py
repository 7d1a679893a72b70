"""Keep the monitor's resident memory close to what it uses (glibc only; a no-op elsewhere).

Bursts (a backlog after a restart, a slow broker) build large short-lived batches; glibc
keeps the freed memory in per-thread arenas, so RSS stays at the high-water mark and
looks like a leak. Fewer arenas and a periodic ``malloc_trim`` give it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any, Final

log = logging.getLogger(__name__)
M_ARENA_MAX: Final = -8
_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc


def limit_arenas(n: int = 2) -> None:
    """At most ``n`` malloc arenas from now on (librdkafka and RocksDB run many threads)."""
    lib = _glibc()
    if lib:
        lib.mallopt(M_ARENA_MAX, n)


def trim() -> None:
    """Return free heap memory to the operating system."""
    lib = _glibc()
    if lib:
        lib.malloc_trim(0)
