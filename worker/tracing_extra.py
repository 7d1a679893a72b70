"""Whether ``tracing`` can be honoured: the OpenTelemetry API (the ``otel`` extra) is imported
only when the setting is on, and its absence is one line at start, naming the extra."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.delivery_terms import Headers
from worker.errors import ConfigError

#: A published record's span: (name, attributes) -> its trace context as headers.
RecordTracer = Callable[[str, Mapping[str, Any]], Headers]


def missing_extra(exc: ImportError) -> ConfigError:
    return ConfigError(f"--tracing true needs the otel extra (pip install "
                       f"'scoring-worker[otel]'): {exc}")


def record_tracer(on: bool) -> RecordTracer | None:
    """The monitor's and retrain's record spans when ``tracing`` is on, else None."""
    if not on:
        return None
    try:
        from worker.record_trace import record_headers
    except ImportError as exc:
        raise missing_extra(exc) from None
    return record_headers
