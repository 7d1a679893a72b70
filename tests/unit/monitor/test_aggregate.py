"""WindowAgg figures equal sklearn's on the same events; merging is exact."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tests.unit.monitor.gen import (
    BINARY,
    BINARY_NO_REF,
    MULTICLASS,
    REFERENCE,
    REGRESSION,
    T0,
    binary_outcomes,
    prediction,
)
from tests.unit.monitor.reference_join import window_deltas
from tests.unit.monitor.sk import (
    binary_reference,
    multiclass_reference,
    psi_reference,
    regression_reference,
)
from worker.monitor.aggregate import (
    WindowAgg,
    add_outcomes,
    add_predictions,
    merge_all,
)
from worker.monitor.catalog import metrics
from worker.monitor.terms import logit_bin
from worker.monitor.views import ModelSpec, Outcome, PredictionView
from worker.monitor.windows import WindowKey, window_start

EXACT = 1e-9


def assert_figures(
    figures: dict[str, Any], expected: dict[str, Any], auc_tol: float = 1e-3
) -> None:
    for name, want in expected.items():
        got = figures[name]
        if want is None:
            assert got is None, name
        else:
            assert got is not None, name
            tol = auc_tol if name == "roc_auc" else EXACT
            assert abs(got - want) <= tol * max(1.0, abs(want)), (name, got, want)


def roundtrip(agg: WindowAgg) -> WindowAgg:
    return WindowAgg.from_dict(orjson.loads(orjson.dumps(agg.to_dict())))


@pytest.mark.parametrize("seed", range(4))
def test_binary_figures_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    outcomes = binary_outcomes(rng, 3000, threshold=float(rng.choice([0.05, 0.3, 0.9])))
    agg = add_outcomes(WindowAgg(), outcomes, BINARY)
    figures = metrics(agg, REFERENCE)
    assert_figures(figures, binary_reference(outcomes))
    assert figures["mae"] is None and figures["rmse"] is None and figures["mape"] is None
    assert roundtrip(agg) == agg


def test_scores_exactly_zero_and_one_with_the_wrong_label_match_sklearn_clipping() -> None:
    cases = [(0.0, 1), (1.0, 0), (0.0, 0), (1.0, 1), (1e-17, 1), (1 - 1e-17, 0), (0.5, 1)]
    outcomes = [Outcome(prediction(i, s, int(s >= 0.5)), y, T0, T0)
                for i, (s, y) in enumerate(cases)]
    figures = metrics(add_outcomes(WindowAgg(), outcomes, BINARY))
    expected = binary_reference(outcomes)
    # 0.0 and 1e-17 share the clipped end bin: a tie that moves AUC a lot on 7 events.
    assert_figures(figures, expected, auc_tol=0.05)
    log_loss = figures["log_loss"]
    assert log_loss is not None and log_loss > 10  # the clipped -log(eps) terms dominate


@pytest.mark.parametrize("positive", [0, 1])
def test_one_class_only_leaves_auc_and_warned_figures_undefined(positive: int) -> None:
    rng = np.random.default_rng(7)
    outcomes = [Outcome(o.prediction, positive, o.label_time, o.joined_at)
                for o in binary_outcomes(rng, 500)]
    figures = metrics(add_outcomes(WindowAgg(), outcomes, BINARY))
    assert figures["roc_auc"] is None
    assert figures["recall"] is None if positive == 0 else figures["recall"] is not None
    assert_figures(figures, binary_reference(outcomes))


def test_precision_undefined_without_predicted_positives() -> None:
    outcomes = [Outcome(prediction(i, 0.01, 0), i % 2, T0, T0) for i in range(10)]
    figures = metrics(add_outcomes(WindowAgg(), outcomes, BINARY))
    assert figures["precision"] is None and figures["recall"] == 0.0 and figures["f1"] == 0.0
    assert_figures(figures, binary_reference(outcomes))
    all_negative = [Outcome(prediction(i, 0.01, 0), 0, T0, T0) for i in range(10)]
    figures = metrics(add_outcomes(WindowAgg(), all_negative, BINARY))
    assert figures["precision"] is None and figures["recall"] is None and figures["f1"] is None
    assert figures["accuracy"] == 1.0
    assert_figures(figures, binary_reference(all_negative))


def test_an_empty_window_has_counts_and_nothing_else() -> None:
    figures = metrics(WindowAgg(), REFERENCE)
    counts = {"count": 0, "predicted": 0, "expired": 0, "invalid": 0}
    assert {k: v for k, v in figures.items() if v is not None} == counts


@pytest.mark.parametrize("concentration", [(0.3, 300.0), (0.5, 60.0), (2.0, 2.0)])
def test_binned_auc_is_within_1e_3_of_sklearn(concentration: tuple[float, float]) -> None:
    rng = np.random.default_rng(11)
    n = 4000
    y = (rng.random(n) < 0.1).astype(int)
    scores = rng.beta(*concentration, n) * np.where(y == 1, 1.0, 0.6)
    outcomes = [Outcome(prediction(i, float(s), 0), int(t), T0, T0)
                for i, (s, t) in enumerate(zip(scores, y, strict=True))]
    figures = metrics(add_outcomes(WindowAgg(), outcomes, BINARY))
    assert_figures(figures, binary_reference(outcomes))


def test_logit_bins_are_fine_below_0_01() -> None:
    assert logit_bin(0.001) != logit_bin(0.001006)
    assert logit_bin(0.0) == logit_bin(1e-13) and logit_bin(1.0) == -logit_bin(0.0)


def test_psi_counts_every_prediction_against_the_reference_bins() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(0.5, 10.0, 2000), [0.0, 1.0, 0.05, 0.95]])
    preds = [prediction(i, float(s), 0) for i, s in enumerate(scores)]
    agg = add_predictions(WindowAgg(), preds, BINARY)
    figures = metrics(agg, REFERENCE)
    assert figures["predicted"] == len(preds) and figures["count"] == 0
    assert figures["coverage"] == 0.0 and figures["accuracy"] is None
    want = psi_reference(scores.tolist(), REFERENCE.edges, REFERENCE.counts)
    assert figures["psi"] == pytest.approx(want, abs=1e-12)
    assert metrics(agg)["psi"] is None  # no reference, no PSI
    assert metrics(add_predictions(WindowAgg(), preds, BINARY_NO_REF), REFERENCE)["psi"] is None


def test_psi_of_the_reference_itself_is_near_zero_and_drift_is_large() -> None:
    same = np.random.default_rng(99).beta(0.5, 20.0, 5000)
    drifted = np.random.default_rng(1).beta(2.0, 5.0, 5000)
    for values, low in ((same, True), (drifted, False)):
        agg = add_predictions(WindowAgg(), [prediction(i, float(v), 0)
                                            for i, v in enumerate(values)], BINARY)
        psi = metrics(agg, REFERENCE)["psi"]
        assert psi is not None and ((psi < 1e-9) if low else (psi > 1.0))


def test_regression_figures_match_sklearn() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    y = np.round(rng.normal(0, 2, n), 1)  # rounding makes exact zeros common
    yhat = y + rng.normal(0, 0.5, n)
    # Every third truth is an int, as JSON would bring a whole number.
    truths = [float(t) if i % 3 else int(np.rint(t)) for i, t in enumerate(y)]
    outcomes = [Outcome(prediction(i, float(p), float(p)), t, T0, T0)
                for i, (p, t) in enumerate(zip(yhat, truths, strict=True))]
    assert any(o.true_label == 0 for o in outcomes)
    agg = add_outcomes(WindowAgg(), outcomes, REGRESSION)
    agg = add_predictions(agg, [o.prediction for o in outcomes], REGRESSION)
    figures = metrics(agg, REGRESSION.reference)
    assert_figures(figures, regression_reference(outcomes))
    assert figures["accuracy"] is None and figures["roc_auc"] is None
    assert figures["positives"] is None
    assert REGRESSION.reference is not None
    want = psi_reference(yhat.tolist(), REGRESSION.reference.edges, REGRESSION.reference.counts)
    assert figures["psi"] == pytest.approx(want, abs=1e-12)
    assert roundtrip(agg) == agg


def test_mape_is_undefined_when_every_truth_is_zero() -> None:
    outcomes = [Outcome(prediction(i, 1.0, 1.0), 0, T0, T0) for i in range(3)]
    figures = metrics(add_outcomes(WindowAgg(), outcomes, REGRESSION))
    assert figures["mape"] is None and figures["mae"] == 1.0 and figures["rmse"] == 1.0


def test_multiclass_figures_match_sklearn() -> None:
    rng = np.random.default_rng(9)
    classes = ["low", "mid", "high"]
    outcomes = []
    for i in range(2000):
        probs = rng.dirichlet([0.3, 0.3, 0.3])
        if i % 50 == 0:
            probs = np.array([1.0, 0.0, 0.0])  # exact 0 and 1 probabilities
        score = {c: float(p) for c, p in zip(classes, probs, strict=True)}
        truth = classes[int(rng.choice(3, p=0.5 * probs + 0.5 / 3))]
        decision = classes[int(np.argmax(probs))]
        outcomes.append(Outcome(prediction(i, score, decision), truth, T0, T0))
    agg = add_outcomes(WindowAgg(), outcomes, MULTICLASS)
    figures = metrics(agg, REFERENCE)
    assert_figures(figures, multiclass_reference(outcomes, classes))
    assert figures["precision"] is None and figures["roc_auc"] is None and figures["psi"] is None
    assert roundtrip(agg) == agg


def test_unusable_outcomes_are_counted_as_invalid_not_scored() -> None:
    bad = [
        Outcome(prediction(0, 0.5, 1), 2, T0, T0),  # not one of the classes
        Outcome(prediction(1, {"a": 1.0}, "a"), 1, T0, T0),  # dict score for a binary model
    ]
    agg = add_outcomes(WindowAgg(), bad, BINARY)
    assert metrics(agg)["invalid"] == 2 and metrics(agg)["count"] == 0
    regression = add_outcomes(WindowAgg(), [Outcome(prediction(2, 1.0, 1.0), "x", T0, T0),
                                            Outcome(prediction(3, 1e200, 1e200), -1e200, T0, T0)],
                              REGRESSION)
    assert metrics(regression)["invalid"] == 2
    unconstrained = ModelSpec("binary", positive="fraud")
    ok = add_outcomes(WindowAgg(), [Outcome(prediction(4, 0.9, "fraud"), "fraud", T0, T0),
                                    Outcome(prediction(5, 0.1, "ok"), "other", T0, T0)],
                      unconstrained)
    assert metrics(ok)["count"] == 2 and metrics(ok)["positives"] == 1


def split_merge(aggs: list[WindowAgg], rng: np.random.Generator) -> WindowAgg:
    """Merge in a random tree shape and order."""
    items = list(aggs)
    while len(items) > 1:
        i, j = sorted(rng.choice(len(items), 2, replace=False).tolist())
        b, a = items.pop(j), items.pop(i)
        items.append(a.merge(b) if rng.random() < 0.5 else b.merge(a))
    return items[0] if items else WindowAgg()


@pytest.mark.parametrize("seed", range(3))
def test_merge_is_exact_commutative_associative_with_identity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    outcomes = binary_outcomes(rng, 2000)
    whole = add_outcomes(WindowAgg(), outcomes, BINARY)
    whole = add_predictions(whole, [o.prediction for o in outcomes], BINARY)
    parts = np.array_split(rng.permutation(len(outcomes)), int(rng.integers(2, 12)))
    aggs = [add_predictions(add_outcomes(WindowAgg(), [outcomes[i] for i in idx], BINARY),
                            [outcomes[i].prediction for i in idx], BINARY)
            for idx in parts]
    merged = split_merge(aggs, rng)
    assert merged == whole and metrics(merged, REFERENCE) == metrics(whole, REFERENCE)
    a, b, c = aggs[0], aggs[1], aggs[-1]
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(WindowAgg()) == a == WindowAgg().merge(a)
    assert merge_all([]) == WindowAgg() and roundtrip(WindowAgg()) == WindowAgg()


def test_merging_different_tasks_is_refused() -> None:
    binary = add_outcomes(WindowAgg(), [Outcome(prediction(0, 0.5, 1), 1, T0, T0)], BINARY)
    regression = add_outcomes(WindowAgg(), [Outcome(prediction(1, 2.0, 2.0), 1, T0, T0)],
                              REGRESSION)
    with pytest.raises(ValueError, match="cannot merge"):
        binary.merge(regression)
    with pytest.raises(ValueError, match="unknown task"):
        WindowAgg.from_dict({"task": "ranking"})


def test_window_deltas_place_events_by_event_time_in_every_window() -> None:
    rng = np.random.default_rng(21)
    outcomes = binary_outcomes(rng, 3000, span_ms=3 * 3_600_000)
    preds = [o.prediction for o in outcomes]
    # Some predictions without event time fall back to scored_at.
    preds[:50] = [PredictionView(p.id, p.score, p.label, p.model, p.model_version,
                                 p.event_time, None) for p in preds[:50]]
    deltas = window_deltas(("5m", "1h"), lambda p: BINARY, preds, outcomes, preds[:7])
    five = {k: v for k, v in deltas.items() if k.window == "5m"}
    starts = {window_start(p.event_time, 300_000) for p in preds}
    assert {k.start_ms for k in five} == starts and len(starts) >= 36
    members: dict[tuple[str, int], list[Outcome]] = {}
    for o in outcomes:
        for window, size in (("5m", 300_000), ("1h", 3_600_000)):
            key = (window, window_start(o.prediction.event_time, size))
            members.setdefault(key, []).append(o)
    for i, (key, agg) in enumerate(sorted(deltas.items())):
        mine = members[(key.window, key.start_ms)]
        assert metrics(agg)["predicted"] == metrics(agg)["count"] == len(mine)
        if key.window == "1h" or i % 4 == 0:  # sklearn on a sample of the 5m windows: speed
            assert_figures(metrics(agg), binary_reference(mine))
    hours = [v for k, v in deltas.items() if k.window == "1h"]
    assert sum(int(metrics(h)["expired"] or 0) for h in hours) == 7
    # Equal but for maturity: a label's age counts from the end of each window it is in.
    five_all, hours_all = merge_all(five.values()), merge_all(hours)
    assert without_maturity(five_all) == without_maturity(hours_all)
    assert sum(five_all.hists["mature"].values()) == sum(hours_all.hists["mature"].values())
    assert WindowKey("fraud", "1", "1h", T0 - T0 % 3_600_000) in deltas


def without_maturity(agg: WindowAgg) -> WindowAgg:
    return WindowAgg(agg.task, agg.counts, agg.sums,
                     {k: v for k, v in agg.hists.items() if k != "mature"})
