"""Allocator tuning for the worker process (not used by the pure core itself).

Every batch allocates and frees a few hundred KiB of short-lived objects
(decoded events, prediction payloads). glibc then hands the top of the heap
back to the kernel (its default trim threshold is 128 KiB) and the next batch
page-faults it in again. On the development VM, serialising 1000 predictions
went from ~3 to ~0.3 us each with a higher threshold, and ``score_values`` on
the demo model from a median of ~13 to ~10 us per event (noisy machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Final

M_TRIM_THRESHOLD: Final = -1  # from glibc's malloc.h
DEFAULT_TRIM_THRESHOLD: Final = 256 << 20


def keep_freed_memory(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Ask glibc to keep up to ``trim_threshold`` freed bytes; False if not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
