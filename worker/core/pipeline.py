"""Raw message values -> one outcome each: the pure pipeline of the worker.

Both the Kafka runner and batch mode call ``score_values``, so a record is
judged the same way wherever it comes from. Stages: decode (orjson), optional
schema validation, feature extraction, one model call for the whole batch,
prediction serialisation. Outcomes come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, cast

import orjson

from worker.core.features import NOT_AN_OBJECT, extract
from worker.core.records import PredictionRecord, encode
from worker.core.schema import EventValidator
from worker.core.scoring import build_predictions, score_batch_safely
from worker.errors import Rejection, RejectKind
from worker.model.bundle import ModelBundle

DEFAULT_MAX_EVENT_BYTES: Final = 1 << 20
DEFAULT_EVENT_TS_FIELD: Final = "ts"

TOMBSTONE: Final = Rejection(RejectKind.DECODE, "null value (tombstone)")
EMPTY_VALUE: Final = Rejection(RejectKind.DECODE, "empty value")
INVALID_UTF8: Final = Rejection(RejectKind.DECODE, "value is not valid UTF-8")


@dataclass(frozen=True, slots=True)
class ScoringContext:
    """Everything ``score_values`` needs besides the values and the time.

    ``validator`` None means only the built-in checks of ``features.extract``
    (JSON object, string id, finite number features). ``event_ts_field`` None
    means predictions never carry ``event_ts``.
    """

    bundle: ModelBundle
    validator: EventValidator | None = None
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    event_ts_field: str | None = DEFAULT_EVENT_TS_FIELD
    #: Event field with the event's own true label (replays, backtests), copied to the
    #: prediction as ``true_label`` so that the monitor joins it at once; None: off.
    label_field: str | None = None
    #: Optional timing of the model call alone: a clock (seconds) and where the duration
    #: goes. Passed in, so the pipeline itself never reads a clock.
    clock: Callable[[], float] | None = None
    observe_model_seconds: Callable[[float], None] | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """A scored event: the prediction dict and its JSON bytes (the message value)."""

    record: PredictionRecord
    payload: bytes

    @property
    def id(self) -> str:
        return str(self.record["id"])


Outcome: TypeAlias = Prediction | Rejection


def score_values(
    values: Sequence[bytes | None], ctx: ScoringContext, now_ms: int
) -> list[Outcome]:
    """Score a batch of raw values; exactly one outcome per value, in order."""
    outcomes: list[Outcome | None] = [None] * len(values)
    events, positions = _decode_all(values, ctx.max_event_bytes, outcomes)
    if ctx.validator is not None:
        events, positions = _validate_all(events, positions, ctx.validator, outcomes)
    typed = ctx.validator is not None and ctx.validator.numeric.issuperset(ctx.bundle.features)
    batch = extract(events, ctx.bundle.features, assume_numeric=typed)
    for j, rejection in batch.rejected:
        outcomes[positions[j]] = rejection
    t0 = ctx.clock() if ctx.clock is not None else 0.0
    result, ok_rows, model_rejections = score_batch_safely(ctx.bundle, batch.matrix)
    if ctx.clock is not None and ctx.observe_model_seconds is not None:
        ctx.observe_model_seconds(ctx.clock() - t0)
    for row, rejection in model_rejections:
        outcomes[positions[batch.valid[row]]] = rejection
    scored = [batch.valid[row] for row in ok_rows]
    records: list[dict[str, Any]] = [events[j] for j in scored]
    predictions = build_predictions(ctx.bundle, result, records, now_ms, ctx.event_ts_field)
    if ctx.label_field is not None:
        _copy_true_labels(records, predictions, ctx.label_field)
    for j, prediction in zip(scored, predictions, strict=True):
        outcomes[positions[j]] = Prediction(prediction, encode(prediction))
    return _complete(outcomes)


def _copy_true_labels(
    records: list[dict[str, Any]], predictions: list[PredictionRecord], field: str
) -> None:
    for record, prediction in zip(records, predictions, strict=True):
        value = record.get(field)
        if isinstance(value, int | float | str) and type(value) is not bool:
            prediction["true_label"] = value  # bool, null and objects are not labels


def _decode_all(
    values: Sequence[bytes | None], limit: int, outcomes: list[Outcome | None]
) -> tuple[list[Any], list[int]]:
    """Decoded JSON objects and their input positions; the rest get a rejection."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    events: list[Any] = []
    positions: list[int] = []
    for i, value in enumerate(values):
        if value is None:
            outcomes[i] = TOMBSTONE
        elif len(value) > limit:
            outcomes[i] = Rejection(
                RejectKind.DECODE, f"value of {len(value)} bytes exceeds the {limit}-byte limit"
            )
        elif not value:
            outcomes[i] = EMPTY_VALUE
        else:
            try:
                event = loads(value)
            except decode_error as exc:
                outcomes[i] = _decode_rejection(exc)
                continue
            if type(event) is dict:
                events.append(event)
                positions.append(i)
            else:
                outcomes[i] = NOT_AN_OBJECT
    return events, positions


def _decode_rejection(exc: orjson.JSONDecodeError) -> Rejection:
    # orjson words every UTF-8 problem as "str is not valid UTF-8: surrogates ...".
    if "UTF-8" in exc.msg and "BOM" not in exc.msg:
        return INVALID_UTF8
    return Rejection(RejectKind.DECODE, f"invalid JSON: {exc}")


def _validate_all(
    events: list[Any],
    positions: list[int],
    validator: EventValidator,
    outcomes: list[Outcome | None],
) -> tuple[list[Any], list[int]]:
    check = validator.validate
    problems = [check(event) for event in events]
    if not any(problems):
        return events, positions
    kept_events: list[Any] = []
    kept_positions: list[int] = []
    for event, position, problem in zip(events, positions, problems, strict=True):
        if problem is None:
            kept_events.append(event)
            kept_positions.append(position)
        else:
            outcomes[position] = Rejection(RejectKind.SCHEMA, problem)
    return kept_events, kept_positions


def _complete(outcomes: list[Outcome | None]) -> list[Outcome]:
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # a bug, not a data problem: fail loudly rather than drop records
        raise AssertionError(f"no outcome for inputs {missing[:10]}")
    return cast(list[Outcome], outcomes)
