"""The prediction record: what the worker publishes and the monitor reads.

One definition for both sides (schemas/prediction.schema.json): the worker builds
``PredictionRecord`` dicts (plain dicts, because the hot path builds thousands a
batch) and ``encode``s them; the monitor ``decode``s the same bytes into a checked
``PredictionView``. A test holds the two against the JSON Schema.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypedDict

import orjson

LabelValue = int | float | str
Score = float | dict[str, float]
DEFAULT_TRUE_LABEL_FIELD: Final = "true_label"
#: Segment values longer than this are cut to it (a value is a label of the monitor's
#: gauges and a part of its keys, so its length is bounded where it is made).
SEGMENT_VALUE_MAX: Final = 64
#: The segment value that stands for the values past a cardinality cap, merged: the
#: worker's per-interval cap on feature statistics and the monitor's top K alike.
OTHER_SEGMENT: Final = "__other__"


class RecordError(ValueError):
    """A prediction or label record that cannot be used; the message is one short line."""


class _RequiredFields(TypedDict):
    id: str
    #: Binary: probability of classes[1]; multiclass: {class: probability}; regression: value.
    score: Any
    #: The decision (binary: by the manifest's threshold; multiclass: argmax).
    label: Any
    model: str
    model_version: str
    scored_at: int


class InputSource(TypedDict):
    """Where the input of a prediction was read (the worker's ``lineage`` setting)."""

    topic: str
    partition: int
    offset: int


class PredictionRecord(_RequiredFields, total=False):
    """The wire form of one prediction (schemas/prediction.schema.json).

    Built as plain dicts in the schema's key order (``event_ts`` before ``scored_at``).
    """

    #: The event's own time (epoch ms), when it carried an integer one.
    event_ts: int
    #: The event's own true label (replays), copied from the worker's ``label_field``.
    true_label: LabelValue
    #: The input's topic, partition and offset (the worker's ``lineage`` setting).
    source: InputSource
    #: The event's segment fields (the worker's ``segment_fields``): field -> value as text,
    #: at most ``SEGMENT_VALUE_MAX`` characters; absent when none is set or none is present.
    segments: dict[str, str]
    #: With ``--explain K``: {baseline, output, top: K x {feature, value, contribution}}
    #: (worker/explain/reasons.py).
    reasons: dict[str, Any]


#: The message value of a prediction: orjson's own function, so that encoding thousands of
#: predictions a batch costs no Python call each.
encode: Final[Callable[[PredictionRecord], bytes]] = orjson.dumps


def decode(value: bytes | Mapping[str, Any],
           true_label_field: str = DEFAULT_TRUE_LABEL_FIELD) -> PredictionView:
    """A checked view of a prediction message; RecordError when it cannot be used."""
    if isinstance(value, bytes | bytearray):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"prediction is not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise RecordError("prediction must be a JSON object")
    return PredictionView.from_message(value, true_label_field)


@dataclass(frozen=True, slots=True)
class PredictionView:
    """What a reader of predictions (the monitor) needs of one, checked."""

    id: str
    score: Score
    label: LabelValue
    model: str
    model_version: str
    scored_at: int
    event_ts: int | None = None
    true_label: LabelValue | None = None

    @property
    def event_time(self) -> int:
        """The time that places the prediction in a window: event time, else scoring time."""
        return self.scored_at if self.event_ts is None else self.event_ts

    @property
    def model_key(self) -> tuple[str, str]:
        return (self.model, self.model_version)

    @classmethod
    def from_message(
        cls, msg: Mapping[str, Any], true_label_field: str = DEFAULT_TRUE_LABEL_FIELD
    ) -> PredictionView:
        return cls(*read_prediction(msg, true_label_field))

    def to_dict(self) -> PredictionRecord:
        out: PredictionRecord = {
            "id": self.id,
            "score": dict(self.score) if isinstance(self.score, dict) else self.score,
            "label": self.label,
            "model": self.model,
            "model_version": self.model_version,
            "scored_at": self.scored_at,
        }
        if self.event_ts is not None:
            out["event_ts"] = self.event_ts
        if self.true_label is not None:
            out["true_label"] = self.true_label
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictionView:
        return cls.from_message(data, DEFAULT_TRUE_LABEL_FIELD)


PredictionFields = tuple[str, Score, LabelValue, str, str, int, int | None, LabelValue | None]


def read_prediction(
    msg: Mapping[str, Any], true_label_field: str = DEFAULT_TRUE_LABEL_FIELD
) -> PredictionFields:
    """The checked fields of a prediction message, in ``PredictionView``'s order.

    The one definition of what a usable prediction is. The monitor reads tens of
    thousands a second, so the common types are checked inline before the general
    helpers (which also word the error) are called.
    """
    # Checked in the order of the fields, so that the first problem is the one named.
    ident, model, version = msg.get("id"), msg.get("model"), msg.get("model_version")
    if type(ident) is not str or not ident:
        ident = text(msg, "id")
    score = msg.get("score")
    if type(score) is not float or not math.isfinite(score):
        score = _score(score)
    label = msg.get("label")
    if type(label) is not int and type(label) is not str:
        label = label_value(label, "label")
    if type(model) is not str or not model:
        model = text(msg, "model")
    if type(version) is not str or not version:
        version = text(msg, "model_version")
    scored_at, event_ts = msg.get("scored_at"), msg.get("event_ts")
    if type(scored_at) is not int:
        scored_at = epoch_ms(scored_at, "scored_at")
    if event_ts is not None and type(event_ts) is not int:
        event_ts = epoch_ms(event_ts, "event_ts")
    true_label = msg.get(true_label_field)
    if true_label is not None and type(true_label) is not int and type(true_label) is not str:
        true_label = label_value(true_label, true_label_field)
    return ident, score, label, model, version, scored_at, event_ts, true_label


def same_label(a: LabelValue, b: LabelValue) -> bool:
    """Label equality across JSON types: 1 == 1.0 == "1" == True, but "1.0" != 1."""
    return a == b or str(a) == str(b)


def escape_key_part(part: str) -> str:
    # Record keys are "|"-separated; escaping keeps them unambiguous for any model name.
    return part.replace("%", "%25").replace("|", "%7C")


def unescape_key_part(part: str) -> str:
    return part.replace("%7C", "|").replace("%25", "%")


def text(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{key!r} must be a non-empty string")
    return value


def label_value(value: object, key: str) -> LabelValue:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and finite_number(value) is not None:
        return value  # kept as given: as text (multiclass score keys) 1 and 1.0 differ
    raise RecordError(f"{key!r} must be an integer, a finite number or a string")


def epoch_ms(value: object, key: str) -> int:
    if type(value) is not int:
        raise RecordError(f"{key!r} must be an integer epoch-millisecond time")
    return value


def _score(value: object) -> Score:
    number = finite_number(value)
    if number is not None:
        return number
    if isinstance(value, dict) and value:
        probs = {k: finite_number(v) for k, v in value.items() if isinstance(k, str)}
        if len(probs) == len(value) and all(v is not None for v in probs.values()):
            return {k: v for k, v in probs.items() if v is not None}
    raise RecordError("'score' must be a finite number or an object of class -> number")


def finite_number(value: object) -> float | None:
    """``value`` as a float when it is a finite JSON number, else None."""
    # bool is an int subclass, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def segment_value(value: object) -> str | None:
    """An event field's value as a segment value: strings as they are, integers and finite
    numbers as their JSON text, booleans as ``true``/``false``, cut to ``SEGMENT_VALUE_MAX``
    characters; None (not a segment) for null, objects, arrays and non-finite numbers."""
    if type(value) is str:
        return value[:SEGMENT_VALUE_MAX]
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return orjson.dumps(value).decode()[:SEGMENT_VALUE_MAX]
    return None


#: The top reason of a prediction none of whose reasons raised its score.
NO_POSITIVE_REASON: Final = "__none__"


def read_top_reason(msg: Mapping[str, Any]) -> str:
    """The feature with the largest positive contribution among a prediction's
    ``reasons.top`` (sorted by size, so the first positive one), cut to
    ``SEGMENT_VALUE_MAX`` characters; ``NO_POSITIVE_REASON`` when none is positive; ""
    when the prediction has no readable reasons (a malformed ``reasons`` never costs the
    prediction itself)."""
    raw = msg.get("reasons")
    top = raw.get("top") if type(raw) is dict else None
    if type(top) is not list or not top:
        return ""
    for item in top:
        if type(item) is not dict:
            return ""
        feature, amount = item.get("feature"), item.get("contribution")
        if type(feature) is not str or not feature or not isinstance(amount, int | float) \
                or type(amount) is bool:
            return ""
        if amount > 0:
            return feature[:SEGMENT_VALUE_MAX]
    return NO_POSITIVE_REASON


def field_value(record: dict[str, Any], name: str) -> Any:
    """``record[name]``; for a dotted name missing as a key (wire formats flatten nested
    records into ``outer.inner`` keys, JSON keeps them nested), the nested value."""
    value = record.get(name)
    if value is None and "." in name:
        value = record
        for part in name.split("."):
            if type(value) is not dict:
                return None
            value = value.get(part)
    return value


def read_segments(msg: Mapping[str, Any]) -> str:
    """A prediction's ``segments`` in one canonical text (the monitor's join carries it):
    a JSON list of ``[field, value]`` pairs sorted by field; "" when there are none. Pairs
    that do not fit the schema (a value not a string, or longer than the bound) are left out,
    so a malformed ``segments`` never costs the prediction itself; so are field names with
    "=", which the monitor's keys (``field=value``) cannot hold."""
    raw = msg.get("segments")
    if not raw or type(raw) is not dict:
        return ""
    pairs = sorted((k, v) for k, v in raw.items()
                   if type(k) is str and k and "=" not in k and type(v) is str
                   and len(v) <= SEGMENT_VALUE_MAX)
    return orjson.dumps(pairs).decode() if pairs else ""
