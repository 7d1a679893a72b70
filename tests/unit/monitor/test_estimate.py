"""Estimated figures (CBPE) and the per-window calibration equal a direct computation from
the scores and the calibration map, to 1e-9, whichever way the events are split."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, precision_score, recall_score

from tests.unit.monitor.gen import (
    BINARY,
    BINARY_NO_REF,
    CALIBRATION,
    T0,
    binary_scores,
    binary_truth,
)
from tests.unit.monitor.reference_join import window_deltas
from worker.model.calibration import fit_calibration
from worker.monitor.aggregate import WindowAgg, add_outcomes, add_predictions, merge_all
from worker.monitor.catalog import metrics
from worker.monitor.deltas import batch_deltas
from worker.monitor.estimate import maturity, reliability
from worker.monitor.terms import MATURITY_BOUNDS_S
from worker.monitor.views import ModelSpec, Outcome, PredictionView

THRESHOLD = 0.3
TOL = 1e-9


def stream(seed: int, n: int) -> tuple[list[PredictionView], list[Outcome], Any, Any, Any]:
    """n predictions (decided at THRESHOLD), the first 60 % of them labeled."""
    rng = np.random.default_rng(seed)
    s = binary_scores(rng, n)
    y = binary_truth(rng, s)
    times = T0 + rng.integers(0, 600_000, n)
    pairs = enumerate(zip(s.tolist(), times.tolist(), strict=True))
    preds = [PredictionView(f"e{i}", v, int(v >= THRESHOLD), "fraud", "1", t, t)
             for i, (v, t) in pairs]
    labeled = int(n * 0.6)
    outcomes = [Outcome(p, int(t), p.event_time + 1, p.event_time + 1)
                for p, t in zip(preds[:labeled], y[:labeled], strict=True)]
    return preds, outcomes, s, y, labeled


def aggregate(preds: list[PredictionView], outcomes: list[Outcome],
              spec: ModelSpec = BINARY) -> WindowAgg:
    return add_outcomes(add_predictions(WindowAgg(), preds, spec), outcomes, spec)


def direct(s: Any) -> dict[str, float]:
    """CBPE's expected confusion at the threshold, straight from scores and the map."""
    c = np.asarray(CALIBRATION.rates)[np.searchsorted(CALIBRATION.cuts, s, side="right")]
    d = s >= THRESHOLD
    tp, pos, alerts, n = math.fsum(c[d]), math.fsum(c), int(d.sum()), len(s)
    fp, fn = alerts - tp, pos - tp
    tn = n - alerts - fn
    return {"est_positives": pos, "est_alert_rate": alerts / n, "est_precision": tp / alerts,
            "est_recall": tp / pos, "est_f1": 2 * tp / (2 * tp + fp + fn),
            "est_accuracy": (tp + tn) / n, "est_roc_auc": expected_roc_auc(s, c)}


def expected_roc_auc(s: Any, c: Any) -> float:
    """CBPE's estimated ROC AUC as NannyML computes it: predictions sorted by raw score,
    the calibrated rates accumulated into expected TPR and FPR at every threshold, the
    trapezoid area under that curve (sklearn.metrics.auc)."""
    order = np.argsort(-s, kind="stable")
    tps = np.r_[0.0, np.cumsum(c[order])]
    fps = np.r_[0.0, np.cumsum(1.0 - c[order])]
    return float(auc(fps / fps[-1], tps / tps[-1]))


def test_estimates_equal_a_direct_computation() -> None:
    preds, outcomes, s, y, labeled = stream(1, 6000)
    figures = metrics(aggregate(preds, outcomes))
    want = direct(s)
    for name, value in want.items():
        assert figures[name] == pytest.approx(value, abs=TOL, rel=0), name
    d, yl = s[:labeled] >= THRESHOLD, y[:labeled]
    assert figures["est_gap_recall"] == pytest.approx(
        recall_score(yl, d) - want["est_recall"], abs=TOL, rel=0)
    assert figures["est_gap_precision"] == pytest.approx(
        precision_score(yl, d) - want["est_precision"], abs=TOL, rel=0)
    assert figures["est_gap_roc_auc"] == pytest.approx(
        figures["roc_auc"] - want["est_roc_auc"], abs=TOL, rel=0)


def test_the_estimated_auc_is_cbpes_on_the_raw_scores_exactly_with_a_count_per_rate() -> None:
    """NannyML sorts by the raw score and accumulates the calibrated rates: a count per
    calibrated rate gives the same area (to 1e-9), with at most one bin per step of the
    map, whatever the number of predictions."""
    preds, outcomes, s, _, _ = stream(2, 6000)
    agg = aggregate(preds, outcomes)
    assert len(agg.hists["est_auc"]) <= len(CALIBRATION.rates) < 100
    c = np.asarray(CALIBRATION.rates)[np.searchsorted(CALIBRATION.cuts, s, side="right")]
    assert metrics(agg)["est_roc_auc"] == pytest.approx(expected_roc_auc(s, c), abs=TOL, rel=0)


def test_the_reliability_table_and_ece_equal_sklearns_calibration_curve() -> None:
    preds, outcomes, s, y, labeled = stream(3, 6000)
    agg = aggregate(preds, outcomes)
    sl, yl = s[:labeled], y[:labeled]
    rate, mean = calibration_curve(yl, sl, n_bins=10, strategy="uniform")
    rows = reliability(agg)
    assert [r.positive_rate for r in rows] == pytest.approx(rate.tolist(), abs=TOL, rel=0)
    assert [r.mean_score for r in rows] == pytest.approx(mean.tolist(), abs=TOL, rel=0)
    bins = np.minimum((sl * 10).astype(int), 9)
    counts = np.bincount(bins, minlength=10)
    assert [r.count for r in rows] == counts[counts > 0].tolist()
    ece = sum(counts[b] * abs(sl[bins == b].mean() - yl[bins == b].mean())
              for b in range(10) if counts[b]) / labeled
    assert metrics(agg)["ece"] == pytest.approx(ece, abs=TOL, rel=0)


def test_any_split_gives_the_same_figures_to_the_bit() -> None:
    preds, outcomes, _, _, _ = stream(4, 3000)
    whole = metrics(aggregate(preds, outcomes))
    rng = np.random.default_rng(0)
    cuts = sorted(rng.choice(len(preds), 7, replace=False).tolist())
    parts = [aggregate(preds[a:b], [o for o in outcomes if o.prediction in preds[a:b]])
             for a, b in zip([0, *cuts], [*cuts, len(preds)], strict=True)]
    split = metrics(merge_all(reversed(parts)))
    assert {k: v for k, v in split.items() if k.startswith(("est_", "ece"))} == {
        k: v for k, v in whole.items() if k.startswith(("est_", "ece"))}


def test_the_vectorised_deltas_equal_the_per_event_ones_to_the_bit() -> None:
    preds, outcomes, _, _, _ = stream(5, 4000)
    windows = ("1m", "5m")
    slow = window_deltas(windows, lambda _p: BINARY, preds, outcomes)
    new = [(p.model, p.model_version, p.score, p.label, p.event_time, "") for p in preds]
    joined = [((o.prediction.model, o.prediction.model_version, o.prediction.score,
                o.prediction.label, o.prediction.event_time, ""), o.true_label, o.label_time,
               o.joined_at, False) for o in outcomes]
    fast = batch_deltas(windows, lambda _k, _p: BINARY, new, joined)  # type: ignore[arg-type]
    assert fast == slow


def test_without_a_calibration_map_there_is_no_estimate() -> None:
    preds, outcomes, _, _, _ = stream(6, 500)
    figures = metrics(aggregate(preds, outcomes, BINARY_NO_REF))
    assert all(figures[k] is None for k in figures if k.startswith("est_"))
    assert figures["ece"] is not None


def test_with_calibrated_scores_the_estimate_finds_the_realized_figures() -> None:
    """Outcomes drawn from the calibrated rates themselves: what the estimate assumes.
    Over 100,000 predictions the realized figures fall within 0.01 of the estimates."""
    rng = np.random.default_rng(7)
    s = rng.beta(0.7, 8.0, 100_000)
    cal = fit_calibration(s[:20_000], rng.random(20_000) < s[:20_000], THRESHOLD)
    c = np.asarray(cal.rates)[np.searchsorted(cal.cuts, s, side="right")]
    y = (rng.random(len(s)) < c).astype(int)
    spec = ModelSpec("binary", 1, (0, 1), calibration=cal)
    preds = [PredictionView(f"e{i}", float(v), int(v >= THRESHOLD), "m", "1", T0, T0)
             for i, v in enumerate(s)]
    outcomes = [Outcome(p, int(t), T0, T0) for p, t in zip(preds, y, strict=True)]
    f = metrics(aggregate(preds, outcomes, spec))
    for name in ("recall", "precision", "f1", "accuracy", "roc_auc"):
        assert abs(f[f"est_gap_{name}"]) < 0.01, (name, f[name], f[f"est_{name}"])  # type: ignore[arg-type]


def test_maturity_is_the_share_labeled_by_each_age_after_the_window_closed() -> None:
    """Each window's curve: for every age after its end, the share of its predictions whose
    label had come by then (labels before the close and inline labels count at age 0),
    ending at the last age a label came at, where it equals the coverage; the same through
    the per-event reference and the batch path, for windows of two sizes."""
    preds, _, _, y, _ = stream(8, 3000)
    rng = np.random.default_rng(8)
    delays = rng.exponential(2 * 86_400_000, len(preds)).astype(int)  # days, some never
    labeled = rng.random(len(preds)) < 0.9
    inline = rng.random(len(preds)) < 0.02
    rows = zip(preds, y.tolist(), delays.tolist(), labeled.tolist(), inline.tolist(),
               strict=True)
    outcomes = [Outcome(p, t, p.event_time + d, p.event_time + d, inline=i)
                for p, t, d, keep, i in rows if keep]
    windows = ("5m", "1h")
    slow = window_deltas(windows, lambda _p: BINARY, preds, outcomes)
    new = [(p.model, p.model_version, p.score, p.label, p.event_time, "") for p in preds]
    joined = [((o.prediction.model, o.prediction.model_version, o.prediction.score,
                o.prediction.label, o.prediction.event_time, ""), o.true_label, o.label_time,
               o.joined_at, o.inline) for o in outcomes]
    fast = batch_deltas(windows, lambda _k, _p: BINARY, new, joined)  # type: ignore[arg-type]
    assert fast == slow
    times = np.array([p.event_time for p in preds])
    age_of = np.where(inline, -1, times + delays)
    ages = [*MATURITY_BOUNDS_S, None]
    for key, agg in slow.items():
        mine = (times >= key.start_ms) & (times < key.end_ms)
        age = np.where(inline, -1, age_of - key.end_ms)
        curve = maturity(agg)
        assert [b for b, _ in curve] == ages[: len(curve)]
        last = max(age[mine & labeled])
        bound = curve[-1][0]
        assert bound is None or bound * 1000 >= last  # it reaches the last label
        assert len(curve) == 1 or (curve[-2][0] or 0) * 1000 < last  # and stops there
        for bound, share in curve:
            by = mine & labeled & (age <= (math.inf if bound is None else bound * 1000))
            assert share == pytest.approx(by.sum() / mine.sum(), abs=TOL, rel=0), (key, bound)
        assert curve[-1][1] == metrics(agg)["coverage"]
    assert maturity(aggregate(preds, [])) == [(0, 0.0)]  # predicted, nothing labeled yet
