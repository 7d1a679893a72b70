"""Predictions in a schema registry's format (``--prediction-format``, the workers'
``--output-format``): decoded by the worker's own decoders (worker/core/decoders/) before
the re-key, which then checks them as it checks JSON ones.

The monitor cannot hold a batch aside as the worker does: its offsets join the open
transaction when they are polled. So while the registry does not answer, the loop waits
where it is (asking again after 0.2 s, doubling up to ``schema_registry_backoff_max_s``),
/readyz answers 503 and /healthz stays 200. Nothing is lost: a wait longer than the
transaction timeout makes the broker abort the open transaction, and the monitor then
replays from its last committed offsets (worker/kafka_io/tx.py). A value whose schema id the
registry does not know, or that does not match its schema, counts as an invalid input,
like a prediction that is not JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from worker.core import decoders
from worker.core.decoders.wire import WireDecoder
from worker.errors import ConfigError
from worker.kafka_io import Message
from worker.probes import Health
from worker.stream.schema_gate import SchemaFetcher, look_up_waiting
from worker.wire_settings import InputFormat, PredictionFormatSettings, require_registry

#: Values above this are invalid unread (a prediction is some hundred bytes).
MAX_PREDICTION_BYTES: Final = 1 << 20


@dataclass
class WirePredictions:
    decoder: WireDecoder
    source: SchemaFetcher
    outage: type[Exception]
    health: Health
    stopping: Callable[[], bool]
    backoff_max_s: float = 5.0

    def values(self, msgs: Sequence[Message], topic: str) -> list[bytes | dict[str, Any] | None]:
        """The messages' values, those of ``topic`` (the predictions) as records (None: one
        that cannot be read)."""
        out: list[bytes | dict[str, Any] | None] = [m.value() for m in msgs]
        at = [i for i, m in enumerate(msgs) if m.topic() == topic]
        for i, record in zip(at, self.decode([msgs[i].value() for i in at]), strict=True):
            out[i] = record
        return out

    def decode(self, values: Sequence[bytes | None]) -> list[dict[str, Any] | None]:
        """Each value as a record, or None when it cannot be read."""
        look_up_waiting(self.decoder.book, self.source, list(values), self.outage,
                        self._keep_waiting, self.backoff_max_s)
        self.health.registry_ok = True
        decoded = self.decoder.decode(values, MAX_PREDICTION_BYTES)
        out: list[dict[str, Any] | None] = [None] * len(values)
        for position, event in zip(decoded.positions, decoded.events, strict=True):
            out[position] = event
        return out

    def _keep_waiting(self, _waited_s: float) -> bool:
        self.health.registry_ok = False
        self.health.turned()  # waiting for the registry is not a stuck loop
        return not self.stopping()


def build(s: PredictionFormatSettings, health: Health,
          stopping: Callable[[], bool]) -> WirePredictions | None:
    """The decoding of ``--prediction-format`` (None for JSON, which the re-key reads)."""
    if s.prediction_format is InputFormat.JSON:
        return None
    require_registry("--prediction-format", s.prediction_format, s.schema_registry)
    try:
        decoder = decoders.get(str(s.prediction_format))
        from worker.kafka_io.registry import RegistryUnavailable, SchemaSource, connection_of
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"--prediction-format {s.prediction_format}: {exc}") from None
    assert isinstance(decoder, WireDecoder)
    return WirePredictions(decoder, SchemaSource(connection_of(s)), RegistryUnavailable,
                           health, stopping, s.schema_registry_backoff_max_s)
