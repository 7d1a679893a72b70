"""One model call per batch, and turning its output into prediction dicts.

A model failure must not take the whole batch down with it: when the batched
call raises, the batch is bisected until the rows that make it fail are
isolated, so k bad rows cost O(k log n) extra calls and every other row is
still scored. Rows whose output is not finite are rejected without any extra
call. Nothing here reads a clock: ``now_ms`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from worker.core.records import PredictionRecord
from worker.errors import Rejection, RejectKind, describe
from worker.model.bundle import ModelBundle
from worker.model.manifest import Task

FloatArray = npt.NDArray[np.float64]


class ModelOutputError(ValueError):
    """The estimator returned something of the wrong shape or type."""


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Raw model output: (n, n_classes) probabilities, or (n,) regression values."""

    task: Task
    output: FloatArray

    def __len__(self) -> int:
        return int(self.output.shape[0])


def score_matrix(bundle: ModelBundle, matrix: Any) -> ScoreResult:
    """Score every row with a single call of the bundle's runtime; check the output's shape.

    ``matrix`` is the runtime's input (features.FeatureBatch.matrix): it has ``shape``
    and slices by rows, whatever its kind."""
    n = matrix.shape[0]
    output = np.asarray(bundle.runtime.predict(matrix), dtype=np.float64)
    if bundle.task == "regression":
        if output.ndim == 2 and output.shape[1] == 1:
            output = output[:, 0]
        expected: tuple[int, ...] = (n,)
    else:
        expected = (n, len(bundle.classes))
    if output.shape != expected:
        raise ModelOutputError(f"model output has shape {output.shape}, expected {expected}")
    return ScoreResult(bundle.task, output)


def score_batch_safely(
    bundle: ModelBundle, matrix: Any
) -> tuple[ScoreResult, list[int], list[tuple[int, Rejection]]]:
    """Score ``matrix``; return (results of ok rows, their row indices, rejections)."""
    parts: list[tuple[int, int, FloatArray]] = []
    rejected: list[tuple[int, Rejection]] = []
    if matrix.shape[0]:
        _bisect(bundle, matrix, 0, matrix.shape[0], parts, rejected)
    ok = [i for lo, hi, _ in parts for i in range(lo, hi)]
    output = _concat(bundle, [out for _, _, out in parts])
    finite = np.isfinite(output) if output.ndim == 1 else np.isfinite(output).all(axis=1)
    if not finite.all():
        for pos in np.flatnonzero(~finite).tolist():
            rejected.append((ok[pos], _non_finite_rejection(output[pos])))
        ok = [ok[pos] for pos in np.flatnonzero(finite).tolist()]
        output = np.ascontiguousarray(output[finite])
    rejected.sort(key=lambda item: item[0])
    return ScoreResult(bundle.task, output), ok, rejected


def _bisect(
    bundle: ModelBundle,
    matrix: Any,
    lo: int,
    hi: int,
    parts: list[tuple[int, int, FloatArray]],
    rejected: list[tuple[int, Rejection]],
) -> None:
    try:
        result = score_matrix(bundle, matrix[lo:hi])
    except Exception as exc:  # any estimator error is a property of some rows
        if hi - lo == 1:
            rejected.append((lo, Rejection(RejectKind.MODEL, f"model raised {describe(exc)}")))
            return
        mid = (lo + hi) // 2
        _bisect(bundle, matrix, lo, mid, parts, rejected)
        _bisect(bundle, matrix, mid, hi, parts, rejected)
        return
    parts.append((lo, hi, result.output))


def _concat(bundle: ModelBundle, outputs: list[FloatArray]) -> FloatArray:
    if len(outputs) == 1:
        return outputs[0]
    if outputs:
        return np.concatenate(outputs)
    shape = (0,) if bundle.task == "regression" else (0, len(bundle.classes))
    return np.empty(shape, dtype=np.float64)


def _non_finite_rejection(row: FloatArray) -> Rejection:
    shown = np.array2string(np.atleast_1d(row), precision=4, threshold=6)
    return Rejection(RejectKind.MODEL, f"model returned a non-finite output {shown}")


def build_predictions(
    bundle: ModelBundle,
    result: ScoreResult,
    records: Sequence[Mapping[str, Any]],
    now_ms: int,
    event_ts_field: str | None = "ts",
) -> list[PredictionRecord]:
    """Prediction records (core/records.py) for ``records``, row by row."""
    scores, labels = scores_and_labels(bundle, result)
    name, version = bundle.name, bundle.version
    # Plain dicts, keys in the schema's order (event_ts before scored_at): the bytes
    # published stay the same whatever builds them.
    predictions: list[dict[str, Any]] = []
    for record, score, label in zip(records, scores, labels, strict=True):
        prediction: dict[str, Any] = {
            "id": record["id"],
            "score": score,
            "label": label,
            "model": name,
            "model_version": version,
        }
        if event_ts_field is not None:
            event_ts = record.get(event_ts_field)
            if type(event_ts) is int:
                prediction["event_ts"] = event_ts
        prediction["scored_at"] = now_ms
        predictions.append(prediction)
    return cast(list[PredictionRecord], predictions)


def scores_and_labels(bundle: ModelBundle, result: ScoreResult) -> tuple[list[Any], list[Any]]:
    """Plain-Python scores and decisions, ready for JSON."""
    output = result.output
    if result.task == "regression":
        values: list[float] = output.tolist()
        return values, values
    if result.task == "binary":
        assert bundle.positive_index is not None
        positive: list[float] = output[:, bundle.positive_index].tolist()
        negative_class, positive_class = bundle.classes[0], bundle.classes[1]
        threshold = bundle.threshold
        labels = [positive_class if p >= threshold else negative_class for p in positive]
        return positive, labels
    keys = bundle.class_keys
    rows: list[list[float]] = output.tolist()
    classes = bundle.classes
    winners: list[int] = output.argmax(axis=1).tolist()
    return [dict(zip(keys, row, strict=True)) for row in rows], [classes[i] for i in winners]

