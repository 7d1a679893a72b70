"""worker.stream.alloc: the glibc trim threshold can be raised where glibc is the allocator."""

from __future__ import annotations

import platform
import sys

from worker.stream.alloc import keep_freed_memory


def test_keep_freed_memory_reports_whether_it_applied() -> None:
    applied = keep_freed_memory()
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert applied is on_glibc
