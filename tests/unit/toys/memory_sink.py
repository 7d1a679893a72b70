"""A toy sink: outputs kept in memory, added the way a real one would be (one module, one
register call). It acknowledges everything at once, so nothing is ever re-sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.config import Settings
from worker.stream.sinks import Headers, register


class MemorySink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers | None]] = []
        self.flushes = 0

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None = None) -> None:  # fmt: skip
        self.sent.append((topic, value, key, headers))

    def flush_all(self, timeout_s: float) -> list[Any]:
        self.flushes += 1
        return []

    def resend(self, failed: list[Any]) -> None:
        raise AssertionError("nothing is ever refused")

    def poll(self) -> None:
        pass


INSTANCES: list[MemorySink] = []


def memory_sink(settings: Settings, stats: Callable[[str], None] | None = None) -> MemorySink:
    sink = MemorySink()
    INSTANCES.append(sink)
    return sink


register("memory", memory_sink)
