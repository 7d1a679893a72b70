"""Retraining's model side without a broker: holdout figures equal scikit-learn's, the
candidate is a seeded clone, and its bundle carries its lineage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.unit.helpers import binary_bundle, event, training_data
from tests.unit.test_reload import put
from worker.core.pipeline import ScoringContext
from worker.errors import RetrainError
from worker.model.bundle import load_bundle
from worker.model.manifest import ReferenceHistogram
from worker.model.store import ModelStore
from worker.retrain.act import apply
from worker.retrain.candidate import fit, next_version, seeded_clone, write_candidate
from worker.retrain.decision import Compared
from worker.retrain.evaluate import evaluate
from worker.retrain.policy import Decision, Policy
from worker.retrain.settings import RetrainSettings


def test_holdout_figures_are_the_monitors_and_equal_sklearn(tmp_path: Path) -> None:
    bundle = binary_bundle(tmp_path / "m", threshold=0.4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 3))
    events = [event(i, a=float(r[0]), b=float(r[1]), c=float(r[2])) for i, r in enumerate(x)]
    values = [orjson.dumps(e) for e in events] + [b"not json"]
    truth = [int(v) for v in (x @ [1.0, 0.5, -0.5] + rng.normal(0, 1, 800) > 0)] + [1]
    reference = ReferenceHistogram.from_scores(rng.random(500))
    e = evaluate(ScoringContext(bundle), bundle, values, truth, list(range(801)), 5, reference)
    p = bundle.estimator.predict_proba(x)[:, 1]
    y = np.array(truth[:800])
    assert e.not_scored == 1 and np.isnan(e.scores[-1])
    assert np.array_equal(e.scores[:800], p)
    f = e.figures
    assert f["count"] == 800 and f["positives"] == y.sum()
    assert f["recall"] == pytest.approx(recall_score(y, p >= 0.4), abs=1e-12)
    assert f["precision"] == pytest.approx(precision_score(y, p >= 0.4), abs=1e-12)
    assert f["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-9)
    assert f["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert f["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    assert f["alert_rate"] == pytest.approx(float((p >= 0.4).mean()), abs=1e-12)
    assert f["psi"] is not None and f["psi"] > 0.1  # these scores are not uniform


def test_the_candidate_is_a_seeded_clone_with_the_same_hyperparameters() -> None:
    forest = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=7))
    a = seeded_clone(forest, 11)
    assert a.get_params()["randomforestclassifier__random_state"] == 11
    assert a.get_params()["randomforestclassifier__n_estimators"] == 7
    assert not hasattr(a[-1], "estimators_")  # unfitted
    chosen = seeded_clone(LogisticRegression(random_state=5, C=0.3), 11)
    assert chosen.random_state == 5 and chosen.C == 0.3  # the team's own seed is kept


def test_equal_data_and_seed_give_an_equal_model(tmp_path: Path) -> None:
    champion = binary_bundle(tmp_path / "m")
    x, y = training_data(n=600, seed=4)
    one, two = fit(champion, x, y, seed=3), fit(champion, x, y, seed=3)
    assert np.array_equal(one.predict_proba(x), two.predict_proba(x))
    with pytest.raises(RetrainError, match="fitting a clone"):
        fit(champion, x, np.zeros_like(y), seed=3)  # one class: LogisticRegression refuses


def test_versions_and_the_written_bundle(tmp_path: Path) -> None:
    assert next_version(["1", "2", "10"]) == "11"
    with pytest.raises(RetrainError, match="--version"):
        next_version(["1", "v2"])
    champion = binary_bundle(tmp_path / "m")
    x, y = training_data(n=300)
    model = fit(champion, x, y, seed=0)
    lineage = {"data": {"start_ms": 1, "end_ms": 2}, "figures": {"champion": {"recall": None}}}
    path = write_candidate(tmp_path / "c", model, champion, version="8", threshold=0.25,
                           metrics={"recall": 0.5}, reference=ReferenceHistogram.from_scores([0.1]),
                           lineage=lineage, created_at="2026-01-01T00:00:00+00:00")  # fmt: skip
    man = load_bundle(path).manifest
    assert (man.name, man.version, man.threshold, man.features) == (
        champion.name, "8", 0.25, champion.features)
    assert man.lineage == lineage and man.metrics == {"recall": 0.5}
    assert man.artifact.endswith(".skops")


def test_no_promotion_when_the_champion_changed_during_the_run(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    for version in ("1", "2", "3"):
        put(store, version)
    store.promote("unit", "3")  # made current while a run compared 2 with 1
    c = Compared("unit", "1", "2", {}, {}, (0.5, 0.5), (0, 1), (0, 1))
    decision = Decision(True, ())
    with pytest.raises(RetrainError, match="unit 3 was made current during the run"):
        apply(RetrainSettings(), store, c, decision, Policy(), "promoted", 0)
    assert store.current("unit").name == "3"
