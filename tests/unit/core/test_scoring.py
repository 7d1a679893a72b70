"""worker.core.scoring: one call per batch, bisection, and prediction dicts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.unit.helpers import (
    NAN_TRIGGER,
    POISON,
    PoisonEstimator,
    binary_bundle,
    event,
    multiclass_bundle,
    poison_bundle,
    regression_bundle,
    training_data,
    without,
)
from worker.core.scoring import (
    ScoreResult,
    build_predictions,
    score_batch_safely,
    score_matrix,
)
from worker.errors import RejectKind
from worker.model.bundle import ModelBundle


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return binary_bundle(tmp_path_factory.mktemp("binary"), threshold=0.3)


@pytest.fixture
def poison(tmp_path: Path) -> ModelBundle:
    PoisonEstimator.calls = 0
    return poison_bundle(tmp_path)


def test_scores_are_the_models_own_probabilities(binary: ModelBundle) -> None:
    x, _ = training_data(n=50, seed=3)
    result = score_matrix(binary, x)
    np.testing.assert_allclose(result.output, binary.estimator.predict_proba(x), atol=1e-9)
    assert len(result) == 50


def test_binary_predictions_apply_the_threshold(binary: ModelBundle) -> None:
    x, _ = training_data(n=200, seed=4)
    records = [event(i) for i in range(200)]
    predictions = build_predictions(binary, score_matrix(binary, x), records, now_ms=42)
    positive = binary.estimator.predict_proba(x)[:, 1]
    assert 0 < sum(p["label"] for p in predictions) < 200
    for prediction, p, record in zip(predictions, positive, records, strict=True):
        assert prediction["id"] == record["id"]
        assert type(prediction["score"]) is float and abs(prediction["score"] - p) <= 1e-9
        assert type(prediction["label"]) is int
        assert prediction["label"] == (1 if p >= 0.3 else 0)
        assert prediction["model"] == "unit" and prediction["model_version"] == "7"
        assert prediction["event_ts"] == record["ts"]
        assert prediction["scored_at"] == 42
    assert list(predictions[0]) == ["id", "score", "label", "model", "model_version",
                                    "event_ts", "scored_at"]


def test_event_ts_only_when_the_event_has_an_integer_time(binary: ModelBundle) -> None:
    x = np.zeros((5, 3))
    records = [event(0), without(event(1), "ts"), event(2, ts="2024-01-01"), event(3, ts=True),
               event(4, ts=1.5e12)]
    result = score_matrix(binary, x)
    predictions = build_predictions(binary, result, records, 1)
    assert ["event_ts" in p for p in predictions] == [True, False, False, False, False]
    custom = build_predictions(binary, result, [event(i, when=i) for i in range(5)], 1, "when")
    assert [p["event_ts"] for p in custom] == [0, 1, 2, 3, 4]
    assert all("event_ts" not in p for p in build_predictions(binary, result, records, 1, None))


def test_multiclass_scores_are_a_class_map_and_label_the_argmax(tmp_path: Path) -> None:
    bundle = multiclass_bundle(tmp_path)
    x, _ = training_data(n=30, seed=5)
    records = [event(i) for i in range(30)]
    predictions = build_predictions(bundle, score_matrix(bundle, x), records, 1)
    proba = bundle.estimator.predict_proba(x)
    classes = list(bundle.estimator.classes_)
    for prediction, row in zip(predictions, proba, strict=True):
        assert set(prediction["score"]) == {"high", "low", "mid"}
        assert math.isclose(sum(prediction["score"].values()), 1.0)
        assert prediction["score"]["mid"] == pytest.approx(row[classes.index("mid")], abs=1e-9)
        assert prediction["label"] == classes[int(np.argmax(row))]
        assert type(prediction["label"]) is str


def test_regression_score_and_label_are_the_prediction(tmp_path: Path) -> None:
    bundle = regression_bundle(tmp_path)
    x, _ = training_data(n=10, seed=6)
    records = [event(i) for i in range(10)]
    predictions = build_predictions(bundle, score_matrix(bundle, x), records, 1)
    expected = bundle.estimator.predict(x)
    assert [p["score"] for p in predictions] == pytest.approx(expected.tolist(), abs=1e-9)
    assert all(p["label"] == p["score"] for p in predictions)


def test_clean_batch_costs_exactly_one_model_call(poison: ModelBundle) -> None:
    x, _ = training_data(n=300)
    result, ok, rejected = score_batch_safely(poison, x)
    assert PoisonEstimator.calls == 1
    assert ok == list(range(300)) and rejected == []
    assert result.output.shape == (300, 2)


def test_bisection_isolates_poisoned_rows_and_scores_the_rest(poison: ModelBundle) -> None:
    x, _ = training_data(n=1024)
    x[[3, 700], 0] = POISON
    result, ok, rejected = score_batch_safely(poison, x)
    assert [i for i, _ in rejected] == [3, 700]
    for _, rejection in rejected:
        assert rejection.kind is RejectKind.MODEL
        assert rejection.message == "model raised ValueError: poisoned row with 1 hits"
    assert ok == [i for i in range(1024) if i not in (3, 700)]
    clean = x[ok]
    np.testing.assert_allclose(result.output, PoisonEstimator().predict_proba(clean), atol=1e-12)
    # Two bad rows in 1024: about 2 * 2 * log2(1024) calls, far fewer than 1024.
    assert PoisonEstimator.calls <= 1 + 2 * 2 * 10 + 1


def test_non_finite_outputs_are_rejected_without_extra_calls(poison: ModelBundle) -> None:
    x, _ = training_data(n=20)
    x[[0, 19], 0] = NAN_TRIGGER
    result, ok, rejected = score_batch_safely(poison, x)
    assert PoisonEstimator.calls == 1
    assert [i for i, _ in rejected] == [0, 19]
    assert rejected[0][1].kind is RejectKind.MODEL
    assert "non-finite output" in rejected[0][1].message
    assert ok == list(range(1, 19)) and len(result) == 18


def test_every_row_failing_and_empty_batches(poison: ModelBundle) -> None:
    x = np.full((5, 3), POISON)
    result, ok, rejected = score_batch_safely(poison, x)
    assert ok == [] and [i for i, _ in rejected] == [0, 1, 2, 3, 4]
    assert result.output.shape == (0, 2)
    empty, ok, rejected = score_batch_safely(poison, np.empty((0, 3)))
    assert (empty.output.shape, ok, rejected) == ((0, 2), [], [])
    assert PoisonEstimator.calls == 9  # 1 + 2 + 2 + 4: a full bisection of 5 rows


def test_wrong_output_shape_is_a_model_rejection(binary: ModelBundle) -> None:
    broken = ModelBundle(
        manifest=binary.manifest,
        estimator=binary.estimator,
        path=binary.path,
        classes=(0, 1, 2),  # the output will have 2 columns, not 3
        positive_index=1,
        class_keys=("0", "1", "2"),
    )
    _, ok, rejected = score_batch_safely(broken, np.zeros((2, 3)))
    assert ok == []
    message = rejected[0][1].message
    # Bisected down to single rows, each of which still has the wrong shape.
    assert message == (
        "model raised ModelOutputError: model output has shape (1, 2), expected (1, 3)"
    )


def test_score_result_length() -> None:
    assert len(ScoreResult("regression", np.zeros(4))) == 4
