"""worker.devtools.demo: realistic synthetic traffic, a good-not-perfect model, real drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from tests.unit.helpers import SCHEMAS
from worker.core.schema import load_schema_json, schema_errors
from worker.devtools.demo import (
    DEMO_FEATURES,
    LR30_FEATURES,
    make_events,
    make_lr30_bundle,
    make_lr30_events,
    sample_transactions,
    train_demo,
)
from worker.model.bundle import ModelBundle, load_bundle


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    folder = train_demo(tmp_path_factory.mktemp("demo") / "fraud", seed=5, n=40_000)
    return load_bundle(folder)  # default trust: no extra skops types needed


def test_events_follow_the_schema_and_are_reproducible() -> None:
    events, labels = make_events(np.random.default_rng(1), 300, 1000, 1_700_000_000_000)
    again, _ = make_events(np.random.default_rng(1), 300, 1000, 1_700_000_000_000)
    assert events == again
    schema = load_schema_json(SCHEMAS / "transaction.schema.json")
    assert all(schema_errors(e, schema) == [] for e in events)
    assert [e["id"] for e in events[:2]] == ["tx-1000", "tx-1001"]
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps) and stamps[0] >= 1_700_000_000_000
    assert len(labels) == 300 and set(labels) <= {0, 1}
    assert all("label" not in e for e in events)
    with_labels, same = make_events(np.random.default_rng(1), 5, 0, 0, include_label=True)
    assert [e["label"] for e in with_labels] == same
    assert all(type(e["hour"]) is int and type(e["amount"]) is float for e in events)


def test_fraud_is_rare_but_present() -> None:
    _, labels = sample_transactions(np.random.default_rng(2), 100_000)
    assert 0.01 <= labels.mean() <= 0.03


def test_demo_model_is_good_not_perfect_and_bundle_is_complete(demo: ModelBundle) -> None:
    m = demo.manifest
    assert m.features == DEMO_FEATURES and m.task == "binary" and m.artifact == "model.skops"
    assert 0.88 <= m.metrics["roc_auc"] <= 0.97
    for key in ("average_precision", "recall", "precision", "accuracy", "log_loss", "brier"):
        assert key in m.metrics
    assert 0.0 < m.threshold < 1.0
    assert not hasattr(demo.estimator, "feature_names_in_")
    histogram = m.reference_histogram
    assert histogram is not None and len(histogram.counts) == 20
    assert sum(histogram.counts) == m.metrics["n"]
    # The calibration map comes from the same holdout, with the threshold as a cut.
    cal = m.calibration
    assert cal is not None and cal.size == m.metrics["n"] and m.threshold in cal.cuts
    assert abs(sum(r * n for r, n in zip(cal.rates, cal.rows, strict=True)) / cal.size
               - m.metrics["positive_rate"]) < 1e-3
    # The inputs' reference profile: the same holdout rows.
    assert m.profile is not None and m.profile.names == DEMO_FEATURES
    assert all(f.rows == m.metrics["n"] and f.missing == 0 for f in m.profile.features)


def test_drift_hurts_recall_and_shifts_scores(demo: ModelBundle) -> None:
    rng = np.random.default_rng(8)
    normal_x, normal_y = sample_transactions(rng, 40_000)
    drift_x, drift_y = sample_transactions(rng, 40_000, drifted=True)
    normal_p = demo.estimator.predict_proba(normal_x)[:, 1]
    drift_p = demo.estimator.predict_proba(drift_x)[:, 1]
    t = demo.threshold
    normal_recall = recall_score(normal_y, normal_p >= t)
    drift_recall = recall_score(drift_y, drift_p >= t)
    assert drift_recall < normal_recall / 2
    assert roc_auc_score(drift_y, drift_p) < roc_auc_score(normal_y, normal_p) - 0.2
    assert drift_p.mean() > 1.5 * normal_p.mean()


def test_lr30_bundle_and_events(tmp_path: Path) -> None:
    bundle = load_bundle(make_lr30_bundle(tmp_path, seed=3, n=2_000))
    assert bundle.features == LR30_FEATURES and len(LR30_FEATURES) == 30
    events = make_lr30_events(np.random.default_rng(0), 3, 10)
    assert [e["id"] for e in events] == ["lr30-10", "lr30-11", "lr30-12"]
    assert set(events[0]) == {"id", *LR30_FEATURES}
