"""A toy sink: outputs kept in memory, added the way a real one would be (one module, one
register call). It acknowledges every record as it takes it, so nothing is ever re-sent."""

from __future__ import annotations

from worker.config import Settings
from worker.stream.sinks import Headers, OnDelivery, SinkHooks, register


class MemorySink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers | None]] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None, on_delivery: OnDelivery, tag: int) -> None:
        self.sent.append((topic, value, key, headers))
        on_delivery(tag, None, None)  # in memory is delivered for good

    def poll(self, timeout_s: float) -> None:
        pass


INSTANCES: list[MemorySink] = []


def memory_sink(settings: Settings, hooks: SinkHooks) -> MemorySink:
    sink = MemorySink()
    INSTANCES.append(sink)
    return sink


register("memory", memory_sink)
