"""Trace context for the records the monitor and ``retrain`` publish (``tracing``; the
``otel`` extra): each alert or decision gets a short span of its own, a root (an alert
answers a window of many traces, not one input), and its record carries that span's
``traceparent``, so that the pager, ticket or job that handles it continues one trace.

Imported only when ``tracing`` is on (``record_tracer``); uses the OpenTelemetry API only,
like worker/stream/otel.py: the SDK, exporter and sampler are the user's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.delivery_terms import Headers

SCOPE: Final = "scoring-worker"
_PROPAGATOR: Final = TraceContextTextMapPropagator()

#: Span attributes: text, numbers or booleans.
Attributes = Mapping[str, str | int | float | bool]


def record_headers(name: str, attributes: Attributes, tracer: Tracer | None = None) -> Headers:
    """Start and end the span ``name`` of one published record; its trace context as
    Kafka headers (none when the API has no SDK behind it: nothing would record it).
    ``tracer``: the global provider's unless given (tests)."""
    tracer = tracer or trace.get_tracer(SCOPE)
    span = tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=dict(attributes))
    span.end()
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return [(k, v.encode()) for k, v in carrier.items()]
