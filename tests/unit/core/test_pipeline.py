"""worker.core.pipeline: every malformed input maps to the right kind; order is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.unit.helpers import (
    FEATURES,
    POISON,
    PoisonEstimator,
    binary_bundle,
    event,
    poison_bundle,
    without,
)
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.core.schema import EventValidator
from worker.errors import Rejection, RejectKind
from worker.model.bundle import ModelBundle

EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "a", "b", "c"],
    "properties": {"id": {"type": "string"}, "a": {"type": "number"},
                   "b": {"type": "number", "maximum": 10}, "c": {"type": "integer"}},
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return binary_bundle(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def ctx(bundle: ModelBundle) -> ScoringContext:
    return ScoringContext(bundle, max_event_bytes=2000)


def raw(record: object) -> bytes:
    return orjson.dumps(record)


GOOD = raw(event(0))


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (b"this is not json {", RejectKind.DECODE, "invalid JSON: "),
        (b"", RejectKind.DECODE, "empty value"),
        (None, RejectKind.DECODE, "null value (tombstone)"),
        (b'{"id": "\xff\xfe"}', RejectKind.DECODE, "value is not valid UTF-8"),
        (b"\xed\xa0\x80", RejectKind.DECODE, "value is not valid UTF-8"),
        (GOOD[:-1] + b',"a":NaN}', RejectKind.DECODE, "invalid JSON: "),
        (GOOD[:-1] + b',"a":Infinity}', RejectKind.DECODE, "invalid JSON: "),
        (GOOD[:-1] + b',"a":1e999}', RejectKind.DECODE, "number is infinity"),
        (raw({**event(0), "pad": "x" * 3000}), RejectKind.DECODE, "exceeds the 2000-byte limit"),
        (b"[1, 2, 3]", RejectKind.SCHEMA, "event must be a JSON object"),
        (b'"just a string"', RejectKind.SCHEMA, "event must be a JSON object"),
        (b"42", RejectKind.SCHEMA, "event must be a JSON object"),
        (b"null", RejectKind.SCHEMA, "event must be a JSON object"),
        (raw(without(event(0), "id")), RejectKind.SCHEMA, "event needs a string 'id'"),
        (raw(event(0, id=12)), RejectKind.SCHEMA, "event needs a string 'id'"),
        (raw(without(event(0), "b")), RejectKind.FEATURES, "feature 'b' is missing"),
        (raw(event(0, a="12.50")), RejectKind.FEATURES, "feature 'a' must be a finite number"),
        (raw(event(0, c=None)), RejectKind.FEATURES, "got null"),
        (raw(event(0, c=False)), RejectKind.FEATURES, "got bool"),
    ],
)
def test_each_malformed_value_gets_its_kind(
    ctx: ScoringContext, value: bytes | None, kind: RejectKind, message: str
) -> None:
    outcomes = score_values([GOOD, value, GOOD], ctx, now_ms=1)
    assert isinstance(outcomes[0], Prediction) and isinstance(outcomes[2], Prediction)
    rejection = outcomes[1]
    assert isinstance(rejection, Rejection)
    assert rejection.kind is kind
    assert rejection.message.startswith(message) or message in rejection.message
    assert "\n" not in rejection.message


def test_oversized_message_names_the_size(ctx: ScoringContext) -> None:
    value = raw({**event(0), "pad": "x" * 5000})
    (rejection,) = score_values([value], ctx, 1)
    assert rejection == Rejection(
        RejectKind.DECODE, f"value of {len(value)} bytes exceeds the 2000-byte limit"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (event(0, b=11), "b: 11 is greater than the maximum of 10"),
        (event(0, c=1.5), "c: 1.5 is not of type 'integer'"),
        (event(0, a="1"), "a: '1' is not of type 'number'"),
        (without(event(0), "c"), "$: 'c' is a required property"),
    ],
)
def test_schema_failures_are_schema_rejections(
    bundle: ModelBundle, record: dict[str, object], message: str
) -> None:
    ctx = ScoringContext(bundle, validator=EventValidator(EVENT_SCHEMA))
    outcomes = score_values([raw(record), GOOD], ctx, 1)
    assert outcomes[0] == Rejection(RejectKind.SCHEMA, message)
    assert isinstance(outcomes[1], Prediction)


def test_predictions_match_the_model_and_keep_input_order(ctx: ScoringContext) -> None:
    records = [event(i, a=float(i) / 7, b=(-1) ** i * 2.5) for i in range(50)]
    values: list[bytes | None] = [raw(r) for r in records]
    values[10] = b"junk"
    values[30] = None
    outcomes = score_values(values, ctx, now_ms=99)
    assert len(outcomes) == 50
    scored = [i for i, o in enumerate(outcomes) if isinstance(o, Prediction)]
    assert scored == [i for i in range(50) if i not in (10, 30)]
    x = np.array([[records[i][f] for f in FEATURES] for i in scored], dtype=np.float64)
    expected = ctx.bundle.estimator.predict_proba(x)[:, 1]
    for i, p in zip(scored, expected, strict=True):
        outcome = outcomes[i]
        assert isinstance(outcome, Prediction)
        assert outcome.id == records[i]["id"]
        assert abs(outcome.record["score"] - p) <= 1e-9
        assert outcome.record["event_ts"] == records[i]["ts"]
        assert outcome.record["scored_at"] == 99
        assert orjson.loads(outcome.payload) == outcome.record


def test_one_model_call_per_batch_and_poison_is_isolated(tmp_path: Path) -> None:
    PoisonEstimator.calls = 0
    ctx = ScoringContext(poison_bundle(tmp_path))
    values: list[bytes | None] = [raw(event(i)) for i in range(100)]
    outcomes = score_values(values, ctx, 1)
    assert PoisonEstimator.calls == 1
    assert all(isinstance(o, Prediction) for o in outcomes)
    values[42] = raw(event(42, a=POISON))
    outcomes = score_values(values, ctx, 1)
    assert outcomes[42] == Rejection(RejectKind.MODEL, "model raised ValueError: poisoned row "
                                                       "with 1 hits")
    assert sum(isinstance(o, Prediction) for o in outcomes) == 99


def test_event_ts_field_is_configurable(bundle: ModelBundle) -> None:
    ctx = ScoringContext(bundle, event_ts_field="event_time")
    (outcome,) = score_values([raw(event(0, event_time=123))], ctx, 1)
    assert isinstance(outcome, Prediction) and outcome.record["event_ts"] == 123
    (outcome,) = score_values([GOOD], ScoringContext(bundle, event_ts_field=None), 1)
    assert isinstance(outcome, Prediction) and "event_ts" not in outcome.record


def test_nothing_to_score(ctx: ScoringContext) -> None:
    assert score_values([], ctx, 1) == []
    assert [o.kind for o in score_values([None, b"x"], ctx, 1)] == [  # type: ignore[union-attr]
        RejectKind.DECODE,
        RejectKind.DECODE,
    ]


def test_label_field_is_copied_as_true_label_for_replays(tmp_path: Path) -> None:
    from worker.core.pipeline import Prediction, ScoringContext, score_values

    ctx = ScoringContext(binary_bundle(tmp_path / "m"), label_field="label")
    values = [orjson.dumps(event(0, label=1)), orjson.dumps(event(1)),
              orjson.dumps(event(2, label=True))]
    out = score_values(values, ctx, 5)
    assert all(isinstance(o, Prediction) for o in out)
    records = [o.record for o in out if isinstance(o, Prediction)]
    assert records[0]["true_label"] == 1
    assert "true_label" not in records[1] and "true_label" not in records[2]
    off = score_values(values[:1], ScoringContext(ctx.bundle), 5)[0]
    assert isinstance(off, Prediction) and "true_label" not in off.record


def test_segment_fields_are_copied_bounded_and_off_leaves_predictions_unchanged(
        tmp_path: Path) -> None:
    import json

    import jsonschema

    bundle = binary_bundle(tmp_path / "m")
    events = [event(0, country="DE", geo={"city": "Köln"}, vip=True),
              event(1, country="x" * 100, geo=None, vip=3),
              event(2, country=None, **{"geo.city": "Lyon"}), event(3)]
    values = [orjson.dumps(e) for e in events]
    on = ScoringContext(bundle, segment_fields=("country", "geo.city", "vip"))
    records = [o.record for o in score_values(values, on, 5) if isinstance(o, Prediction)]
    assert [r.get("segments") for r in records] == [
        {"country": "DE", "geo.city": "Köln", "vip": "true"},
        {"country": "x" * 64, "vip": "3"},
        {"geo.city": "Lyon"},  # a wire format's flattened key
        None,  # none of the fields: no segments at all
    ]
    schema = json.loads((Path(__file__).resolve().parents[3] / "schemas" /
                         "prediction.schema.json").read_text())
    for r in records:
        jsonschema.validate(r, schema)
    off = score_values(values, ScoringContext(bundle), 5)
    plain = score_values(values, ScoringContext(bundle, segment_fields=("absent",)), 5)
    assert [o.payload for o in off if isinstance(o, Prediction)] == [
        o.payload for o in plain if isinstance(o, Prediction)]
    assert all(b"segments" not in o.payload for o in off if isinstance(o, Prediction))


def test_segment_fields_setting_is_checked() -> None:
    from worker.config import parse_segment_fields

    assert parse_segment_fields(" country, geo.city,country ") == ("country", "geo.city")
    assert parse_segment_fields("") == ()
    for bad in ("a,b,c,d,e,f,g,h,i", "a..b", "x=y", "x" * 65, ".a"):
        with pytest.raises(ValueError):
            parse_segment_fields(bad)


def test_the_model_call_is_timed_with_the_clock_passed_in(tmp_path: Path) -> None:
    ticks = iter([10.0, 10.25])
    seen: list[float] = []
    ctx = ScoringContext(binary_bundle(tmp_path / "m"), clock=lambda: next(ticks),
                         observe_model_seconds=seen.append)
    score_values([orjson.dumps(event(0))], ctx, 5)
    assert seen == [0.25]
