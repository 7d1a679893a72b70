"""Trace context through the worker with OpenTelemetry (``tracing``; the ``otel`` extra).

One span per batch, not one per poll or per message: a batch is what the worker does in one
step, and a span per message would cost more than scoring it. The batch span links to the
trace context of each input that carries one (``traceparent`` in its headers). Each input
with a context gets a short span of its own in the input's trace (its parent is the input's
span, with a link to the batch span), and the outputs that answer that input carry its
``traceparent`` (and ``tracestate``): a trace goes on from the prediction or dead letter in
the same trace id, under a new span id. Inputs without trace context cost nothing more
than the batch span's share.

Only the OpenTelemetry API is used: the exporter, the sampler and the resource are the
user's, set through the standard ``OTEL_*`` variables by the SDK they install (for example
``opentelemetry-instrument scoring-worker run ...``). Without an SDK the API's tracer makes
non-recording spans, and outputs keep their inputs' trace context unchanged.

Imported only when ``tracing`` is on (worker/stream/app.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.delivery_terms import Headers
from worker.kafka_io import Message
from worker.stream.outputs import Kind, Output, RecordLimit, headers_size

#: The instrumentation scope of the spans.
SCOPE: Final = "scoring-worker"
#: The headers of trace context (W3C): replaced on an output by its own.
_TRACE_HEADERS: Final = frozenset({"traceparent", "tracestate"})
_PROPAGATOR: Final = TraceContextTextMapPropagator()


class _KafkaHeaders(Getter[Sequence[tuple[str, Any]]]):
    """Reads trace context from a consumed message's header list."""

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        found = [v.decode("latin-1") if isinstance(v, bytes) else str(v)
                 for k, v in carrier if k.lower() == key and v is not None]
        return found or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER: Final = _KafkaHeaders()


@dataclass
class BatchSpan:
    """A batch's span and the trace context of each of its inputs (None: it had none)."""

    span: trace.Span
    parents: list[otel_context.Context | None]


class OtelTracing:
    """Spans of the worker's batches, and the trace context their outputs carry."""

    def __init__(self, input_topic: str, limit: RecordLimit,
                 tracer: Tracer | None = None) -> None:
        self._topic, self._limit = input_topic, limit
        self._tracer = tracer or trace.get_tracer(SCOPE)

    def begin(self, msgs: Sequence[Message], model: str, version: str) -> BatchSpan:
        parents: list[otel_context.Context | None] = []
        links = []
        for m in msgs:
            headers = m.headers()
            ctx = None
            if headers:
                pairs = list(headers.items()) if isinstance(headers, dict) else headers
                if any(k.lower() == "traceparent" for k, _ in pairs):
                    ctx = _PROPAGATOR.extract(pairs, getter=_GETTER)
                    sc = trace.get_current_span(ctx).get_span_context()
                    if sc.is_valid:
                        links.append(Link(sc))
                    else:
                        ctx = None
            parents.append(ctx)
        span = self._tracer.start_span(
            "score batch", kind=SpanKind.CONSUMER, links=links,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.destination.name": self._topic,
                        "messaging.batch.message_count": len(msgs),
                        "scoring.model.name": model, "scoring.model.version": version})
        return BatchSpan(span, parents)

    def finish(self, batch: BatchSpan, msgs: Sequence[Message], outputs: list[Output],
               scored: int, dead_lettered: int) -> None:
        """Give each output that answers an input with trace context the context of a
        span in that input's trace; end the batch span with its counts."""
        link = [Link(batch.span.get_span_context())]
        carried: dict[int, Headers] = {}
        fits = self._limit.fits
        for i, out in enumerate(outputs):
            src = out.source
            if src < 0 or out.kind is Kind.DROPPED or batch.parents[src] is None:
                continue
            context = carried.get(src)
            if context is None:
                context = carried[src] = self._continue(batch.parents[src], msgs[src], link)
            kept = [(k, v) for k, v in out.headers or () if k.lower() not in _TRACE_HEADERS]
            headers = [*kept, *context]
            if fits(len(out.value or b"") + len(out.key or b"") + headers_size(headers)):
                outputs[i] = out._replace(headers=headers)
        batch.span.set_attributes({"scoring.predictions": scored,
                                   "scoring.dead_letters": dead_lettered,
                                   "scoring.traced_inputs": len(carried)})
        batch.span.end()

    def _continue(self, parent: otel_context.Context | None, m: Message,
                  links: list[Link]) -> Headers:
        span = self._tracer.start_span(
            "score", context=parent, kind=SpanKind.PRODUCER, links=links,
            attributes={"messaging.system": "kafka",
                        "messaging.destination.partition.id": str(m.partition()),
                        "messaging.kafka.offset": m.offset() or 0})
        span.end()
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return [(k, v.encode()) for k, v in carrier.items()]
