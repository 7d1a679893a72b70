"""The sink seam: where the worker's outputs go (predictions, dead letters, shadow
predictions, model alerts), each addressed by its topic name from the settings.

The loop's delivery contract rests on it: ``send`` queues, ``flush_all`` waits until
everything queued is either acknowledged or refused and returns the refused ones,
``resend`` queues those again. Offsets are committed only after ``flush_all`` came
back empty-handed, so a sink must not report a message delivered before its
destination has it (at-least-once).

Kafka (worker/stream/sinks/kafka.py) is the built-in sink. Adding one is adding a
module with a factory and calling ``register``; ``run_worker(sink=...)`` also takes
an instance directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from worker.config import Settings

Headers = list[tuple[str, str | bytes | None]]


class Sink(Protocol):
    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None = None) -> None:  # fmt: skip
        """Queue one output (may block briefly while the local queue is full)."""

    def flush_all(self, timeout_s: float) -> list[Any]:
        """Wait until nothing is queued; the outputs refused, to be sent again (opaque to
        the loop: it only hands them back to ``resend``)."""

    def resend(self, failed: list[Any]) -> None:
        """Queue refused outputs again, with their original topic, key and headers."""

    def poll(self) -> None:
        """Serve delivery reports without waiting (called when the input is quiet)."""


#: A sink factory gets the settings and a statistics callback (JSON text; may be ignored).
SinkFactory = Callable[[Settings, Callable[[str], None] | None], Sink]
_FACTORIES: dict[str, SinkFactory] = {}


def register(name: str, factory: SinkFactory) -> None:
    _FACTORIES[name] = factory


def build(name: str, settings: Settings, stats: Callable[[str], None] | None = None) -> Sink:
    if "kafka" not in _FACTORIES:
        from worker.stream.sinks import kafka  # noqa: F401  (registers itself)
    try:
        factory = _FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(f"unknown sink {name!r}, expected one of {known}") from None
    return factory(settings, stats)
