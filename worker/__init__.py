"""scoring-worker: score Kafka events with a scikit-learn model, publish predictions and
dead letters, and monitor the model's accuracy as labels arrive.

The stable Python API, for teams that embed scoring in their own service:

- ``load_bundle(path)`` / ``write_bundle(folder, estimator, ...)``: model bundles.
- ``score_records(bundle, records)``: score dicts (in memory) through the worker's own
  decode, validation, feature and model code; ``score_values(values, ctx, now_ms)`` does
  the same for raw message values with a ``ScoringContext`` (schema, decoder, limits).
- ``run_worker(settings, decoder=..., sink=...)``: the streaming loop, with the input
  format or the output replaced; ``Settings`` are the ``scoring-worker run`` settings.
- The seams, to add a kind: ``Decoder`` (+ ``register_decoder``), ``RuntimeKind`` /
  ``ModelRuntime`` (+ ``register_runtime``), ``Sink`` (+ ``register_sink``).

Everything else is internal and may change. Names load on first use, so ``import worker``
stays cheap and imports neither Kafka nor Prometheus.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, str]] = {
    "load_bundle": ("worker.model.bundle", "load_bundle"),
    "write_bundle": ("worker.model.writer", "write_bundle"),
    "ModelBundle": ("worker.model.bundle", "ModelBundle"),
    "score_records": ("worker.api", "score_records"),
    "score_values": ("worker.core.pipeline", "score_values"),
    "ScoringContext": ("worker.core.pipeline", "ScoringContext"),
    "Prediction": ("worker.core.pipeline", "Prediction"),
    "Rejection": ("worker.errors", "Rejection"),
    "PredictionRecord": ("worker.core.records", "PredictionRecord"),
    "Settings": ("worker.config", "Settings"),
    "run_worker": ("worker.stream.app", "run_worker"),
    "Decoder": ("worker.core.decoders", "Decoder"),
    "register_decoder": ("worker.core.decoders", "register"),
    "ModelRuntime": ("worker.model.runtimes", "ModelRuntime"),
    "RuntimeKind": ("worker.model.runtimes", "RuntimeKind"),
    "register_runtime": ("worker.model.runtimes", "register"),
    "Sink": ("worker.stream.sinks", "Sink"),
    "register_sink": ("worker.stream.sinks", "register"),
}

__all__ = [
    "Decoder", "ModelBundle", "ModelRuntime", "Prediction", "PredictionRecord", "Rejection",
    "RuntimeKind", "ScoringContext", "Settings", "Sink", "load_bundle", "register_decoder",
    "register_runtime", "register_sink", "run_worker", "score_records", "score_values",
    "write_bundle",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'worker' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


if TYPE_CHECKING:
    from worker.api import score_records
    from worker.config import Settings
    from worker.core.decoders import Decoder
    from worker.core.decoders import register as register_decoder
    from worker.core.pipeline import Prediction, ScoringContext, score_values
    from worker.core.records import PredictionRecord
    from worker.errors import Rejection
    from worker.model.bundle import ModelBundle, load_bundle
    from worker.model.runtimes import ModelRuntime, RuntimeKind
    from worker.model.runtimes import register as register_runtime
    from worker.model.writer import write_bundle
    from worker.stream.app import run_worker
    from worker.stream.sinks import Sink
    from worker.stream.sinks import register as register_sink
