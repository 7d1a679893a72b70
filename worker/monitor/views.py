"""The monitor's typed view of its input messages and of a joined outcome.

Parsing is strict but cheap (no JSON Schema on the hot path): a message the
monitor cannot use raises ``MonitorInputError`` with one short line, and the
caller decides whether to count or dead-letter it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from worker.model.manifest import Manifest, ReferenceHistogram, Task

LabelValue = int | float | str
Score = float | dict[str, float]
DEFAULT_TRUE_LABEL_FIELD: Final = "true_label"


class MonitorInputError(ValueError):
    """A prediction or label message the monitor cannot use."""


def same_label(a: LabelValue, b: LabelValue) -> bool:
    """Label equality across JSON types: 1 == 1.0 == "1" == True, but "1.0" != 1."""
    return a == b or str(a) == str(b)


@dataclass(frozen=True, slots=True)
class PredictionView:
    """What the monitor needs of one prediction message."""

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
        true_label = msg.get(true_label_field)
        return cls(
            id=_text(msg, "id"),
            score=_score(msg.get("score")),
            label=_label(msg.get("label"), "label"),
            model=_text(msg, "model"),
            model_version=_text(msg, "model_version"),
            scored_at=_time(msg.get("scored_at"), "scored_at"),
            event_ts=None if msg.get("event_ts") is None else _time(msg["event_ts"], "event_ts"),
            true_label=None if true_label is None else _label(true_label, true_label_field),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
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


@dataclass(frozen=True, slots=True)
class LabelView:
    """One ground-truth label; ``received_at`` is when the monitor got it."""

    id: str
    value: LabelValue
    received_at: int
    ts: int | None = None

    @property
    def time(self) -> int:
        """When the label became known: its own ``ts``, else its arrival at the monitor."""
        return self.received_at if self.ts is None else self.ts

    @classmethod
    def from_message(cls, msg: Mapping[str, Any], now_ms: int) -> LabelView:
        ts = msg.get("ts")
        return cls(
            id=_text(msg, "id"),
            value=_label(msg.get("label"), "label"),
            received_at=now_ms,
            ts=None if ts is None else _time(ts, "ts"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.value, "received_at": self.received_at}
        if self.ts is not None:
            out["ts"] = self.ts
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelView:
        return cls.from_message(data, _time(data.get("received_at"), "received_at"))


@dataclass(frozen=True, slots=True)
class Outcome:
    """A prediction joined with its true label."""

    prediction: PredictionView
    true_label: LabelValue
    label_time: int
    joined_at: int
    inline: bool = False

    @property
    def delay_ms(self) -> int | None:
        """Label time minus event time; None for a label carried by the prediction itself."""
        return None if self.inline else self.label_time - self.prediction.event_time

    def to_dict(self) -> dict[str, Any]:
        return {
            "prediction": self.prediction.to_dict(),
            "true_label": self.true_label,
            "label_time": self.label_time,
            "joined_at": self.joined_at,
            "inline": self.inline,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            prediction=PredictionView.from_dict(data["prediction"]),
            true_label=_label(data.get("true_label"), "true_label"),
            label_time=_time(data.get("label_time"), "label_time"),
            joined_at=_time(data.get("joined_at"), "joined_at"),
            inline=bool(data.get("inline", False)),
        )


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to read one model version's predictions (from its manifest)."""

    task: Task
    positive: LabelValue = 1
    classes: tuple[LabelValue, ...] | None = None
    reference: ReferenceHistogram | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelSpec:
        classes = manifest.classes
        # The binary score is the probability of classes[1] (prediction.schema.json).
        positive = classes[1] if manifest.task == "binary" and classes else 1
        return cls(manifest.task, positive, classes, manifest.reference_histogram)

    @classmethod
    def guess(cls, pred: PredictionView) -> ModelSpec:
        """Fallback without a manifest, to be made once per model version and kept: a
        dict score is multiclass; a float decision equal to the score is regression (the
        worker publishes the predicted value as the label); anything else is binary with
        positive class 1. Integer decisions never mean regression, so a binary score of
        exactly 0.0 or 1.0 with decision 0 or 1 is not mistaken for one."""
        if isinstance(pred.score, dict):
            return cls("multiclass")
        if isinstance(pred.label, float) and pred.label == pred.score:
            return cls("regression")
        return cls("binary")


def _text(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise MonitorInputError(f"{key!r} must be a non-empty string")
    return value


def _label(value: object, key: str) -> LabelValue:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and finite_number(value) is not None:
        return value  # kept as given: as text (multiclass score keys) 1 and 1.0 differ
    raise MonitorInputError(f"{key!r} must be an integer, a finite number or a string")


def _time(value: object, key: str) -> int:
    if type(value) is not int:
        raise MonitorInputError(f"{key!r} must be an integer epoch-millisecond time")
    return value


def _score(value: object) -> Score:
    number = finite_number(value)
    if number is not None:
        return number
    if isinstance(value, dict) and value:
        probs = {k: finite_number(v) for k, v in value.items() if isinstance(k, str)}
        if len(probs) == len(value) and all(v is not None for v in probs.values()):
            return {k: v for k, v in probs.items() if v is not None}
    raise MonitorInputError("'score' must be a finite number or an object of class -> number")


def finite_number(value: object) -> float | None:
    """``value`` as a float when it is a finite JSON number, else None."""
    # bool is an int subclass, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
