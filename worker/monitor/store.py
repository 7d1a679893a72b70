"""The seam between stage one and its state: a small key-value store of bytes.

Stage one reads and writes its pending table, window partials and counters
through ``StateStore``. Writes are *staged*: visible to ``get_many`` at once, made
durable by the caller's ``commit`` only after the Kafka transaction that carries
the same changes to the changelog has committed, and dropped by ``rollback`` when
it aborts. So the store is never ahead of the changelog, which stays the source of
truth (worker/monitor_app/rocks.py keeps it on disk; ``MemoryStore`` is for tests
and for runs without a state directory).

Keys: ``e<id>`` pending-table entries, ``d<due><id>`` the expiry index (due time as
8 big-endian bytes, so a range scan walks it in time order), ``w<window key>``
partials, ``s`` counters.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Final, Protocol

ENTRY: Final = b"e"
DUE: Final = b"d"
WINDOW: Final = b"w"
STATS: Final = b"s"
_DUE: Final = struct.Struct(">Q")
_BIAS: Final = 1 << 63  # so that times before 1970 still sort first


def due_key(due_ms: int, ident: bytes) -> bytes:
    biased = due_ms + _BIAS
    if not 0 <= biased < 1 << 64:
        biased = min(max(biased, 0), (1 << 64) - 1)
    return DUE + _DUE.pack(biased) + ident


def split_due_key(key: bytes) -> tuple[int, bytes]:
    (biased,) = _DUE.unpack_from(key, 1)
    return int(biased) - _BIAS, key[9:]


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key that starts with ``prefix``."""
    return prefix[:-1] + bytes((prefix[-1] + 1,))


class StateStore(Protocol):
    """Stage one's state; see the module docstring for the staging contract."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Current values (staged writes included), None for missing keys."""
        ...

    def stage(self, key: bytes, value: bytes | None) -> None:
        """Put (or delete, with None) at the next commit; visible to get_many now."""
        ...

    def scan(self, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` committed (key, value) pairs with start <= key < stop, in order."""
        ...


class MemoryStore:
    """``StateStore`` in a dict, with the same staging contract (tests, no state dir)."""

    def __init__(self) -> None:
        self.committed: dict[bytes, bytes] = {}
        self.staged: dict[bytes, bytes | None] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        staged, committed = self.staged, self.committed
        return [staged[k] if k in staged else committed.get(k) for k in keys]

    def stage(self, key: bytes, value: bytes | None) -> None:
        self.staged[key] = value

    def scan(self, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        keys = sorted(k for k in self.committed if start <= k < stop)[:limit]
        return [(k, self.committed[k]) for k in keys]

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        end = prefix_end(prefix)
        return iter(self.scan(prefix, end, len(self.committed)))

    def commit(self) -> None:
        for k, v in self.staged.items():
            if v is None:
                self.committed.pop(k, None)
            else:
                self.committed[k] = v
        self.staged.clear()

    def rollback(self) -> None:
        self.staged.clear()
