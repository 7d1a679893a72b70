"""``scoring-worker`` under the OpenTelemetry SDK, for bench/worker_bench.py --trace-compare:
a tracer provider with the default sampler (parent-based, always on) and a batch span
processor whose exporter drops the spans, so the figure counts making, sampling and
queueing every span but not a collector's network."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(Dropped()))
trace.set_tracer_provider(provider)

from worker.cli import main  # noqa: E402  (after the provider, as an instrumented app does)

sys.exit(main(sys.argv[1:]))
