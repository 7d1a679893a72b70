"""Raw message values -> one outcome each: the pure pipeline of the worker.

Both the Kafka runner and batch mode call ``score_values``, so a record is
judged the same way wherever it comes from. Stages: decode (orjson), optional
schema validation, feature extraction, one model call for the whole batch,
prediction serialisation. Outcomes come back in input order.

A shadow model (``score_with_shadow``) scores the same batch without a second decode:
it takes the main model's input as it is when its features are the same, and builds
its own from the decoded events when they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, cast

import numpy as np

from worker.core.batch_counts import BatchCounts, count_batch
from worker.core.decoders import Decoder
from worker.core.decoders.json import JsonDecoder
from worker.core.encoders import Encoder
from worker.core.encoders.json import encode as encode_json
from worker.core.feature_counts import CountLayout, IntArray
from worker.core.features import Extractor, FeatureBatch, extractor
from worker.core.records import PredictionRecord, field_value, segment_value
from worker.core.schema import EventValidator
from worker.core.scoring import build_predictions, score_batch_safely
from worker.core.segment_counts import DEFAULT_SEGMENT_VALUES, SegmentCounts
from worker.errors import Rejection, RejectKind
from worker.explain import Explainer, explainer_for
from worker.explain.reasons import reasons
from worker.model.bundle import ModelBundle

DEFAULT_MAX_EVENT_BYTES: Final = 1 << 20
DEFAULT_EVENT_TS_FIELD: Final = "ts"


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
    #: The input format (worker/core/decoders/): JSON objects unless told otherwise.
    decoder: Decoder = field(default_factory=JsonDecoder)
    #: Event fields copied into each prediction's ``segments`` (the worker's
    #: ``segment_fields``): the monitor keeps its figures per value of each; () : off.
    segment_fields: tuple[str, ...] = ()
    #: Values of a segment field whose feature counts a batch keeps apart (the most
    #: frequent; the rest as ``__other__``: worker/core/segment_counts.py).
    segment_values: int = DEFAULT_SEGMENT_VALUES
    #: Reasons on every prediction: the top ``explain`` input features by the size of their
    #: contribution to the score (worker/explain/); 0: none, the predictions as without.
    explain: int = 0
    #: The output format (worker/core/encoders/): a prediction record -> its message value.
    encode: Encoder = encode_json
    #: How records become the model's input: chosen from the bundle once, here.
    extract: Extractor = field(init=False, repr=False, compare=False)
    #: The bins of the bundle's reference profile (None: the bundle has none).
    layout: CountLayout | None = field(init=False, repr=False, compare=False)
    #: The profile's digest, stamped on feature statistics ("": no profile).
    profile_digest: str = field(init=False, repr=False, compare=False)
    #: Chosen by the model's kind when ``explain`` > 0 (ExplainError when there is none).
    explainer: Explainer | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chosen = extractor(self.bundle.manifest.feature_specs, self.bundle.runtime.input)
        object.__setattr__(self, "extract", chosen)
        object.__setattr__(self, "explainer",
                           explainer_for(self.bundle) if self.explain > 0 else None)
        profile = self.bundle.manifest.profile
        object.__setattr__(self, "layout", None if profile is None else CountLayout.of(profile))
        object.__setattr__(self, "profile_digest", "" if profile is None else profile.digest())


@dataclass(frozen=True, slots=True)
class Prediction:
    """A scored event: the prediction dict and its message value (``ScoringContext.encode``:
    JSON unless told otherwise)."""

    record: PredictionRecord
    payload: bytes

    @property
    def id(self) -> str:
        return str(self.record["id"])


Outcome: TypeAlias = Prediction | Rejection


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch up to the model call: row k of ``batch.matrix`` is ``events[batch.valid[k]]``,
    which came from input ``positions[batch.valid[k]]``; every input that cannot be scored
    has its rejection in ``outcomes`` (the other entries are None)."""

    events: list[Any]
    positions: list[int]
    batch: FeatureBatch
    outcomes: list[Outcome | None]
    #: Decoded events the schema refused (dead letters; counted in the feature statistics).
    refused: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A batch decoded and validated: ``events[j]`` came from input ``positions[j]``; every
    input that failed has its rejection in ``outcomes`` (the other entries are None)."""

    events: list[Any]
    positions: list[int]
    outcomes: list[Outcome | None]
    #: Decoded events the schema refused.
    refused: list[Any] = field(default_factory=list)


def prepare(values: Sequence[bytes | None], ctx: ScoringContext) -> Prepared:
    """Decode, validate and extract features: what the model would be given for ``values``.

    Retraining reads its events through this too, so a model is fit on exactly what
    the stream would score."""
    return with_features(decode_valid(values, ctx), ctx)


def decode_valid(values: Sequence[bytes | None], ctx: ScoringContext) -> Decoded:
    """Decode and validate ``values``."""
    outcomes: list[Outcome | None] = [None] * len(values)
    decoded = ctx.decoder.decode(values, ctx.max_event_bytes)
    for i, rejection in decoded.rejected:
        outcomes[i] = rejection
    events: list[Any] = decoded.events
    positions = decoded.positions
    refused: list[Any] = []
    if ctx.validator is not None:
        events, positions = _validate_all(events, positions, ctx.validator, outcomes, refused)
    return Decoded(events, positions, outcomes, refused)


def with_features(decoded: Decoded, ctx: ScoringContext) -> Prepared:
    """The input of ``ctx``'s model for the decoded events (rejecting what it cannot take)."""
    events, positions = decoded.events, decoded.positions
    typed = ctx.validator is not None and ctx.validator.numeric.issuperset(ctx.bundle.features)
    batch = ctx.extract(events, typed)
    outcomes = list(decoded.outcomes)
    for j, rejection in batch.rejected:
        outcomes[positions[j]] = rejection
    return Prepared(events, positions, batch, outcomes, decoded.refused)


@dataclass(frozen=True, slots=True)
class Scored:
    """A batch's outcomes, and the feature counts of its events (None when not asked for,
    or when the bundle has no reference profile): every event that decoded into an
    object, scored or dead-lettered, so that a feed that breaks a field shows in the
    statistics whether the model refuses the events or imputes the field. Values that
    never decoded (not JSON, too large, not an object) have no fields to count."""

    outcomes: list[Outcome]
    feature_counts: IntArray | None = None
    #: Events the counts are of.
    counted: int = 0
    #: With ``segment_fields``: the counts per value of each field (each field may come
    #: twice: the model's rows, then the events refused before it).
    segment_counts: tuple[SegmentCounts, ...] = ()


def score_values(
    values: Sequence[bytes | None], ctx: ScoringContext, now_ms: int
) -> list[Outcome]:
    """Score a batch of raw values; exactly one outcome per value, in order."""
    return score_prepared(prepare(values, ctx), ctx, now_ms).outcomes


def score_batch(
    values: Sequence[bytes | None], ctx: ScoringContext, now_ms: int, count: bool = False
) -> Scored:
    """``score_values``, and with ``count`` the feature counts of the scored events (into
    the reference profile's bins, worker/core/feature_counts.py)."""
    return score_prepared(prepare(values, ctx), ctx, now_ms, count)


def score_with_shadow(
    values: Sequence[bytes | None], ctx: ScoringContext, shadow: ScoringContext, now_ms: int,
    count: bool = False,
) -> tuple[Scored, list[Outcome]]:
    """The outcomes of ``values`` with ``ctx`` and with ``shadow``, decoded once (each list
    as ``score_values`` would give it). The shadow scores the very input the main model
    got when the two take the same; else its own, built from the same decoded events."""
    decoded = decode_valid(values, ctx)
    prepared = with_features(decoded, ctx)
    if not same_decoding(ctx, shadow):
        second = prepare(values, shadow)
    elif same_input(ctx, shadow):
        second = prepared
    else:
        second = with_features(decoded, shadow)
    return (score_prepared(prepared, ctx, now_ms, count),
            score_prepared(second, shadow, now_ms).outcomes)


def same_decoding(a: ScoringContext, b: ScoringContext) -> bool:
    """Whether ``a`` and ``b`` decode and validate a value alike."""
    return (a.decoder == b.decoder and a.validator == b.validator
            and a.max_event_bytes == b.max_event_bytes)


def same_input(a: ScoringContext, b: ScoringContext) -> bool:
    """Whether ``a``'s and ``b``'s models take the same input from the same events."""
    return (same_decoding(a, b) and a.bundle.runtime.input == b.bundle.runtime.input
            and a.bundle.manifest.feature_specs == b.bundle.manifest.feature_specs)


def score_prepared(prepared: Prepared, ctx: ScoringContext, now_ms: int,
                   count: bool = False) -> Scored:
    """Score a prepared batch with ``ctx``'s model (``prepared`` itself is not changed), and
    with ``count`` the feature counts of its decoded events (``Scored``)."""
    events, positions, batch = prepared.events, prepared.positions, prepared.batch
    outcomes = list(prepared.outcomes)
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
    if ctx.segment_fields:
        _copy_segments(records, predictions, ctx.segment_fields)
    if ctx.explainer is not None and predictions:
        _add_reasons(ctx, ctx.explainer, batch, ok_rows, records, predictions)
    encode = ctx.encode
    for j, prediction in zip(scored, predictions, strict=True):
        outcomes[positions[j]] = Prediction(prediction, encode(prediction))
    if count and ctx.layout is not None:
        return Scored(_complete(outcomes), *_count(ctx, ctx.layout, prepared))
    return Scored(_complete(outcomes))


def _count(ctx: ScoringContext, layout: CountLayout, prepared: Prepared) -> BatchCounts:
    """The counts of every decoded event: the model's rows as the model got them (those
    it raised on too), and the events refused before it (schema, features) leniently."""
    batch, events = prepared.batch, prepared.events
    refused = [e for e in (*prepared.refused, *(events[j] for j, _ in batch.rejected))
               if type(e) is dict] if prepared.refused or batch.rejected else []
    model_events = [events[j] for j in batch.valid] if ctx.segment_fields else []
    return count_batch(layout, batch.columns if batch.columns is not None else batch.matrix,
                       model_events, len(batch.valid), refused,
                       ctx.bundle.manifest.feature_specs, ctx.segment_fields,
                       ctx.segment_values)


def _add_reasons(ctx: ScoringContext, explainer: Explainer, batch: FeatureBatch,
                 ok_rows: Sequence[int], records: list[dict[str, Any]],
                 predictions: list[PredictionRecord]) -> None:
    matrix = batch.matrix
    if len(ok_rows) != len(batch.valid):  # rows the model refused have no prediction
        rows = np.asarray(ok_rows, dtype=np.intp)
        matrix = matrix.iloc[rows] if hasattr(matrix, "iloc") else matrix[rows]
    found = reasons(explainer.contributions(matrix), records, ctx.bundle.features,
                    ctx.explain, explainer.output)
    for prediction, reason in zip(predictions, found, strict=True):
        prediction["reasons"] = reason


def _copy_true_labels(
    records: list[dict[str, Any]], predictions: list[PredictionRecord], field: str
) -> None:
    for record, prediction in zip(records, predictions, strict=True):
        value = record.get(field)
        if isinstance(value, int | float | str) and type(value) is not bool:
            prediction["true_label"] = value  # bool, null and objects are not labels


def _copy_segments(records: list[dict[str, Any]], predictions: list[PredictionRecord],
                   fields: tuple[str, ...]) -> None:
    for record, prediction in zip(records, predictions, strict=True):
        found = {}
        for name in fields:
            value = segment_value(field_value(record, name))
            if value is not None:
                found[name] = value
        if found:
            prediction["segments"] = found


def _validate_all(
    events: list[Any],
    positions: list[int],
    validator: EventValidator,
    outcomes: list[Outcome | None],
    refused: list[Any],
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
            refused.append(event)
    return kept_events, kept_positions


def _complete(outcomes: list[Outcome | None]) -> list[Outcome]:
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # a bug, not a data problem: fail loudly rather than drop records
        raise AssertionError(f"no outcome for inputs {missing[:10]}")
    return cast(list[Outcome], outcomes)
