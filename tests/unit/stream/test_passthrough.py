"""Input headers carried onto the outputs that answer them, and each prediction's input
coordinates (worker/stream/passthrough.py), through the loop with in-memory clients. The
real broker: tests/integration/test_passthrough.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from tests.unit.helpers import binary_bundle, event
from tests.unit.stream_fakes import Journal, ListSink, LogConsumer, Msg, make, settings
from worker.core.pipeline import Outcome, Prediction
from worker.errors import Rejection, RejectKind
from worker.stream.outputs import (
    Kind,
    Output,
    RecordLimit,
    Rejecter,
    batch_outputs,
    headers_size,
    shadow_outputs,
)
from worker.stream.passthrough import HeaderFilter, HeaderPassthrough

ROOT = Path(__file__).resolve().parents[3]
TRACE = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def run(tmp_path: Path, msgs: list[Msg], limit: RecordLimit | None = None,
        **overrides: Any) -> list[tuple[str, bytes | None, bytes | None, Any]]:
    sink = ListSink()
    runner = make(tmp_path, LogConsumer({0: msgs}, Journal()), sink, settings(**overrides),
                  limit=limit)
    runner.run()
    return sink.records


def test_the_filter_takes_names_and_patterns_whatever_their_case() -> None:
    f = HeaderFilter.parse("traceparent, X-Correlation-Id,x-b3-*")
    assert [f.passes(n) for n in ("traceparent", "TraceParent", "x-correlation-id",
                                  "X-B3-TraceId", "x-b3", "tracestate", "")] == [
        True, True, True, True, False, False, False]
    headers = [("a", b"1"), TRACE, ("x-b3-spanid", b"2"), ("traceparent", None)]
    assert f.pick(headers) == [TRACE, ("x-b3-spanid", b"2"), ("traceparent", None)]
    assert f.pick(None) == [] and f.pick([]) == []


def test_an_input_whose_every_header_passes_passes_its_own_list() -> None:
    f = HeaderFilter.parse("traceparent,x-request-id")
    mixed = [TRACE, ("authorization", b"Bearer x")]
    assert f.pick(mixed) == [TRACE] and f.pick(mixed) is not mixed
    allowed = [TRACE, ("X-Request-Id", b"r1")]
    assert f.pick(allowed) == allowed  # names seen for the first time: checked one by one
    again = [("X-Request-Id", b"r2"), TRACE]
    assert f.pick(again) is again  # every name known to pass: no copy
    assert f.pick([*again, ("authorization", b"x")]) == again


def test_allowed_headers_go_on_predictions_and_dead_letters_and_nothing_else(
    tmp_path: Path,
) -> None:
    secret = ("authorization", b"Bearer x")
    msgs = [Msg(orjson.dumps(event(0)), 0, _headers=[TRACE, secret]),
            Msg(b"not json", 1, _headers=[("x-request-id", b"r1"), secret]),
            Msg(orjson.dumps(event(2)), 2)]
    records = run(tmp_path, msgs, pass_headers=True)
    by_topic = {(t, v): h for t, v, _, h in records}
    prediction = [h for (t, _), h in by_topic.items() if t == "out"]
    assert prediction == [[TRACE], None]
    (dead,) = [h for (t, _), h in by_topic.items() if t == "dlq"]
    assert dead[-1] == ("x-request-id", b"r1")
    assert [k for k, _ in dead[:-1]] == [k for k, _ in dead[:-1] if k.startswith("dlq.")]
    assert all(secret not in (h or []) for h in by_topic.values())


def test_off_by_default_the_outputs_are_what_they_were(tmp_path: Path) -> None:
    msgs = [Msg(orjson.dumps(event(0)), 0, _headers=[TRACE])]
    (record,) = run(tmp_path, msgs)
    assert record[3] is None
    assert b"source" not in (record[1] or b"")


def test_a_record_that_headers_would_push_past_the_limit_goes_without_them(
    tmp_path: Path,
) -> None:
    big = ("traceparent", b"x" * 70_000)
    msgs = [Msg(orjson.dumps(event(0)), 0, _headers=[big]),
            Msg(orjson.dumps(event(1)), 1, _headers=[TRACE])]
    limit = RecordLimit(66_000, "a test's limit")
    sink = ListSink()
    runner = make(tmp_path, LogConsumer({0: msgs}, Journal()), sink,
                  settings(pass_headers=True, max_event_bytes=1000), limit=limit)
    runner.run()
    assert [(t, h) for t, _, _, h in sink.records] == [("out", None), ("out", [TRACE])]
    assert runner.metrics.passed_headers_dropped._value.get() == 1
    assert headers_size([big]) > limit.bytes


def test_lineage_names_each_predictions_input_and_keeps_the_schema(tmp_path: Path) -> None:
    schema = json.loads((ROOT / "schemas" / "prediction.schema.json").read_text())
    msgs = [Msg(orjson.dumps(event(i)), 10 + i, _partition=3) for i in range(3)]
    records = run(tmp_path, msgs, lineage=True)
    plain = run(tmp_path / "plain", [Msg(orjson.dumps(event(i)), 10 + i, _partition=3)
                                     for i in range(3)])
    for (_, value, _, _), (_, before, _, _), i in zip(records, plain, range(3), strict=True):
        doc = orjson.loads(value or b"")
        jsonschema.validate(doc, schema)
        assert doc.pop("source") == {"topic": "in", "partition": 3, "offset": 10 + i}
        assert doc == orjson.loads(before or b"")


@pytest.mark.parametrize("headers", [
    [("traceparent", b"00-ab-cd-01"), ("x-request-id", b"r-1")],  # every name passes
    [("traceparent", b"00-ab-cd-01"), ("secret", b"s"), ("x-request-id", b"r-1")],
    [("traceparent", None), ("x-request-id", b"r-1")],  # a header without a value
    [("x-request-id", "été")],  # a str value: counted by its UTF-8 bytes
    {"traceparent": b"00-ab-cd-01", "other": b"o"},  # the client's type allows a dict
    [], None,
])
def test_pick_sized_is_pick_and_its_size(headers: Any) -> None:
    """The one-pass pick of the usual input gives what pick and headers_size give."""
    f = HeaderFilter.parse("traceparent,x-request-id")
    f.pick([("traceparent", b"x")])  # a name seen before, as on a running worker
    picked, size = f.pick_sized(headers)
    assert picked == f.pick(headers)
    assert size == headers_size(picked)


@pytest.fixture(scope="module")
def rejecter(tmp_path_factory: pytest.TempPathFactory) -> Rejecter:
    bundle = binary_bundle(tmp_path_factory.mktemp("m") / "m")
    return Rejecter(bundle, "w1", RecordLimit(10_000, "a test's limit"), frozenset({"dlq"}))


def built(msgs: list[Msg], outcomes: list[Outcome], rejecter: Rejecter,
          passthrough: HeaderPassthrough | None) -> tuple[list[Output], list[Output], int]:
    passed = None if passthrough is None else passthrough.picked(msgs)
    main = batch_outputs(msgs, outcomes, "out", "dlq", rejecter, 1, passed)
    shadow = shadow_outputs(msgs, outcomes, "shadow", passed)
    return main, shadow, 0 if passthrough is None else passthrough.count(passed)  # type: ignore[arg-type]


def test_outputs_are_built_with_their_inputs_headers_where_they_fit(rejecter: Rejecter) -> None:
    """Predictions, shadow predictions and dead letters get the headers their input passes,
    as they are built; an output they would push past the limit goes without, counted; a
    dead letter the compacted dead-letter topic would refuse (no key) is never sent, so it
    neither gets them nor counts."""
    big = ("x-request-id", b"r" * 9_500)
    msgs = [Msg(b"{}", 0, _headers=[TRACE]), Msg(b"{}", 1, _headers=[TRACE, big]),
            Msg(b"bad", 2, _headers=[TRACE, ("secret", b"s")]), Msg(b"{}", 3),
            Msg(b"bad", 4, _key=None, _headers=[TRACE])]
    answer = Prediction({"id": "a"}, b'{"id":"a"}')  # type: ignore[typeddict-item]
    bad = Rejection(RejectKind.DECODE, "not JSON")
    outcomes: list[Outcome] = [answer, answer, bad, answer, bad]
    passthrough = HeaderPassthrough(HeaderFilter.parse("traceparent,x-request-id"),
                                    rejecter.limit)
    main, shadow, dropped = built(msgs, outcomes, rejecter, passthrough)
    assert [o.kind for o in main] == [Kind.PREDICTION, Kind.PREDICTION, Kind.DEAD_LETTER,
                                      Kind.PREDICTION, Kind.DROPPED]
    assert main[0].headers == [TRACE]
    assert [o.headers for o in (main[1], main[3])] == [None, None]
    assert main[2].headers is not None and main[2].headers[-1] == TRACE
    assert all(k.startswith("dlq.") for k, _ in main[2].headers[:-1])
    assert main[4].headers is not None and TRACE not in main[4].headers
    assert [(o.source, o.headers) for o in shadow] == [(0, [TRACE]), (1, None), (3, None)]
    assert dropped == 2 and passthrough.dropped_since == 2  # input 1: prediction and shadow
    plain_main, plain_shadow, _ = built(msgs, outcomes, rejecter, None)
    assert [o._replace(headers=None) for o in main if o.kind is Kind.PREDICTION] == [
        o for o in plain_main if o.kind is Kind.PREDICTION]
    assert all(o.headers is None for o in plain_shadow)
    assert plain_main[2].headers == main[2].headers[:-1]
