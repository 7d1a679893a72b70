"""The trace context of the monitor's alerts and retrain's decisions (worker/record_trace.py):
a span of its own per record, whose traceparent the record carries; without an SDK, none."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.unit.helpers import ROOT, without_package
from worker.record_trace import record_headers
from worker.tracing_extra import record_tracer


def test_each_record_gets_a_span_of_its_own_and_carries_its_context() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    first = dict(record_headers("model alert", {"scoring.alert": "recall_low"}, tracer))
    second = dict(record_headers("model alert", {"scoring.alert": "recall_low"}, tracer))
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["model alert", "model alert"]
    assert spans[0].parent is None and spans[0].kind is trace.SpanKind.PRODUCER
    assert dict(spans[0].attributes or {}) == {"scoring.alert": "recall_low"}
    for headers, span in zip((first, second), spans, strict=True):
        version, trace_id, span_id, flags = headers["traceparent"].decode().split("-")
        assert (version, trace_id, span_id) == (
            "00", f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
        assert int(flags, 16) & 1, "sampled"
    assert spans[0].context.trace_id != spans[1].context.trace_id  # a root each


def test_without_an_sdk_nothing_is_carried() -> None:
    assert record_headers("model alert", {}, trace.NoOpTracer()) == []


def test_off_means_no_tracer() -> None:
    assert record_tracer(False) is None
    assert record_tracer(True) is record_headers


@pytest.mark.parametrize("command", [["monitor"], ["retrain", "--model", "models/x"]])
def test_tracing_without_the_extra_is_one_line_and_exit_2(command: list[str]) -> None:
    script = without_package("opentelemetry")
    result = subprocess.run([sys.executable, "-c", script, *command, "--tracing", "true"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'scoring-worker[otel]'" in lines[0], lines
