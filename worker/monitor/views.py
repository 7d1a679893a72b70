"""The monitor's typed view of labels and of a joined outcome; predictions are read with the
worker's own record type (worker/core/records.py).

Parsing is strict but cheap (no JSON Schema on the hot path): a message the
monitor cannot use raises ``MonitorInputError`` with one short line, and the
caller decides whether to count or dead-letter it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.core.records import (
    DEFAULT_TRUE_LABEL_FIELD,
    LabelValue,
    PredictionView,
    Score,
    finite_number,
    same_label,
)
from worker.core.records import RecordError as MonitorInputError
from worker.core.records import epoch_ms as _time
from worker.core.records import label_value as _label
from worker.core.records import text as _text
from worker.model.calibration import Calibration
from worker.model.manifest import Manifest, ReferenceHistogram, Task

__all__ = [
    "DEFAULT_TRUE_LABEL_FIELD", "LabelValue", "LabelView", "ModelSpec", "MonitorInputError",
    "Outcome", "PredictionView", "Score", "finite_number", "same_label",
]

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
    #: Binary: the bundle's score -> outcome-rate map, for estimated figures.
    calibration: Calibration | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelSpec:
        classes = manifest.classes
        # The binary score is the probability of classes[1] (prediction.schema.json).
        positive = classes[1] if manifest.task == "binary" and classes else 1
        return cls(manifest.task, positive, classes, manifest.reference_histogram,
                   manifest.calibration)

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
