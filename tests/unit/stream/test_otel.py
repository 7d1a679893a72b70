"""Trace context through the loop (``tracing``, worker/stream/otel.py) with an in-memory span
exporter: a span per batch, linked to its inputs' contexts, and outputs that continue their
input's trace. The real broker: tests/integration/test_passthrough.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.unit.helpers import ROOT, event, without_package
from tests.unit.stream_fakes import Journal, ListSink, LogConsumer, Msg, make, settings
from worker.stream.otel import OtelTracing
from worker.stream.outputs import RecordLimit

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN:016x}-01".encode()
BLOCK_OTEL = without_package("opentelemetry")


def traced_run(tmp_path: Path, msgs: list[Msg], **overrides: object) -> tuple[
        list[tuple[str, bytes | None, bytes | None, object]], InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = ListSink()
    runner = make(tmp_path, LogConsumer({0: msgs}, Journal(), batch=10), sink,
                  settings(tracing=True, **overrides))
    runner.tracing = OtelTracing("in", RecordLimit(1_000_000, "test"),
                                 provider.get_tracer("test"))
    runner.run()
    return sink.records, exporter


def test_a_span_per_batch_and_outputs_that_continue_their_inputs_trace(
    tmp_path: Path,
) -> None:
    msgs = [Msg(orjson.dumps(event(0)), 0, _headers=[("traceparent", TRACEPARENT),
                                                      ("tracestate", b"vendor=1")]),
            Msg(orjson.dumps(event(1)), 1),
            Msg(b"not json", 2, _headers=[("traceparent", TRACEPARENT)])]
    records, exporter = traced_run(tmp_path, msgs)
    spans = exporter.get_finished_spans()
    (batch,) = [s for s in spans if s.name == "score batch"]
    children = [s for s in spans if s.name == "score"]
    assert dict(batch.attributes or {}) == {
        "messaging.system": "kafka", "messaging.operation.type": "process",
        "messaging.destination.name": "in", "messaging.batch.message_count": 3,
        "scoring.model.name": "unit", "scoring.model.version": "7",
        "scoring.predictions": 2, "scoring.dead_letters": 1, "scoring.traced_inputs": 2}
    assert [link.context.trace_id for link in batch.links] == [TRACE_ID, TRACE_ID]
    assert len(children) == 2
    for child in children:
        assert child.context.trace_id == TRACE_ID
        assert child.parent is not None and child.parent.span_id == PARENT_SPAN
        assert [link.context.span_id for link in child.links] == [batch.context.span_id]
    expected = {f"00-{TRACE_ID:032x}-{c.context.span_id:016x}-01" for c in children}
    headers = {t: dict(h or []) for t, _, _, h in records if t in {"out", "dlq"} and h}
    prediction = [dict(h or []) for t, _, _, h in records if t == "out"]
    assert prediction[1] == {}, "an input without trace context: no header"
    carried = {prediction[0]["traceparent"].decode(), headers["dlq"]["traceparent"].decode()}
    assert carried == expected
    assert prediction[0]["tracestate"] == b"vendor=1"


def test_with_pass_headers_the_outputs_trace_context_is_the_continued_one(
    tmp_path: Path,
) -> None:
    msgs = [Msg(orjson.dumps(event(0)), 0, _headers=[("traceparent", TRACEPARENT),
                                                      ("x-request-id", b"r0")])]
    records, exporter = traced_run(tmp_path, msgs, pass_headers=True)
    ((_, _, _, headers),) = records
    (child,) = [s for s in exporter.get_finished_spans() if s.name == "score"]
    assert headers == [("x-request-id", b"r0"), (
        "traceparent", f"00-{TRACE_ID:032x}-{child.context.span_id:016x}-01".encode())]


def test_tracing_without_the_extra_is_one_line_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_OTEL, "run", "--tracing", "true",
                             "--model", "nowhere"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'scoring-worker[otel]'" in lines[0], lines


def test_a_worker_without_tracing_imports_nothing_of_opentelemetry() -> None:
    code = ("import sys\nfrom worker.cli import main\nfrom worker.stream.app import run_worker\n"
            "from worker.stream.runner import Runner\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
