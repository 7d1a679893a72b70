"""Retraining's model side without a broker: holdout figures equal scikit-learn's, the
candidate is a seeded clone, and its bundle carries its lineage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.unit.helpers import FEATURES, binary_bundle, event, logistic, save, training_data
from tests.unit.stream.test_reload import put
from worker.core.features import for_estimator
from worker.core.pipeline import ScoringContext, prepare
from worker.errors import ModelLoadError, RetrainError
from worker.model.checked import load_checked
from worker.model.manifest import ReferenceHistogram
from worker.model.profile import profile_of
from worker.model.store import ModelStore
from worker.model.writer import write_bundle
from worker.retrain.act import apply
from worker.retrain.candidate import fit, next_version, seeded_clone, write_candidate
from worker.retrain.decision import Compared
from worker.retrain.evaluate import evaluate
from worker.retrain.job import champion_of
from worker.retrain.policy import Decision, Policy
from worker.retrain.registry import StoreRegistry
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
    path = write_candidate(tmp_path / "c", model, champion, version="8", sample=x[200:],
                           threshold=0.25, metrics={"recall": 0.5},
                           reference=ReferenceHistogram.from_scores([0.1]), lineage=lineage,
                           created_at="2026-01-01T00:00:00+00:00",
                           profile_rows=x[:200])
    bundle = load_checked(path)  # the self-test passes
    man = bundle.manifest
    assert man.profile == profile_of(x[:200], man.feature_specs)  # the training rows'
    assert (man.name, man.version, man.threshold, man.features) == (
        champion.name, "8", 0.25, champion.features)
    assert man.feature_specs == champion.manifest.feature_specs
    assert man.lineage == lineage and man.metrics == {"recall": 0.5}
    assert man.artifact.endswith(".skops") and man.libraries["scikit-learn"]
    # The self-test sample is holdout rows, as events, with the candidate's own scores.
    assert man.self_test is not None and len(man.self_test.events) == 64
    first = man.self_test.events[0]
    assert [first[f] for f in FEATURES] == x[200].tolist()
    assert man.self_test.outputs[0] == model.predict_proba(x[200:201])[0].tolist()


def test_a_binary_candidate_gets_a_calibration_map_from_a_large_enough_holdout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    champion = binary_bundle(tmp_path / "m")
    x, y = training_data(n=1600)
    model = fit(champion, x[:800], y[:800], seed=0)
    common = {"threshold": 0.5, "metrics": {}, "lineage": {},
              "reference": ReferenceHistogram.from_scores([0.1]),
              "created_at": "2026-01-01T00:00:00+00:00"}
    path = write_candidate(tmp_path / "c", model, champion, version="2", sample=x[800:],
                           labels=y[800:].tolist(), **common)  # type: ignore[arg-type]
    cal = load_checked(path).manifest.calibration
    assert cal is not None and cal.size == 800 and 0.5 in cal.cuts
    small = write_candidate(tmp_path / "s", model, champion, version="3", sample=x[1300:],
                            labels=y[1300:].tolist(), **common)  # type: ignore[arg-type]
    assert load_checked(small).manifest.calibration is None
    assert "gets no calibration map: its holdout has 300 labeled rows" in caplog.text


def test_a_frame_champion_with_a_string_feature_gives_a_typed_candidate(tmp_path: Path) -> None:
    """Retraining reads rows as the worker builds them (a DataFrame for this model) and
    writes a candidate with the champion's types and the categories it learned itself."""
    rng = np.random.default_rng(3)
    countries = np.array(["de", "fr", "it", "es"])

    def frame(n: int, pool: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
        df = pd.DataFrame({"amount": rng.normal(size=n), "country": rng.choice(pool, n)})
        y = ((df["amount"] + (df["country"] == "fr") * 1.5 + rng.normal(0, .5, n)) > .5)
        return df, y.to_numpy(dtype=np.int64)

    pipe = make_pipeline(ColumnTransformer([("c", OneHotEncoder(), ["country"])],
                                           remainder="passthrough"), LogisticRegression())
    df, y = frame(400, countries)
    write_bundle(tmp_path / "champ", pipe.fit(df, y), name="unit", version="1",
                 task="binary", sample=df)
    champion = load_checked(tmp_path / "champ")
    assert [f.categories for f in champion.manifest.feature_specs] == [None, ("de", "es", "fr",
                                                                              "it")]
    # Recent traffic has no "es" any more: the refit's encoder does not know it.
    df, y = frame(300, countries[:3])
    events = [event(i, amount=a, country=c) for i, (a, c) in enumerate(df.itertuples(False))]
    prepared = prepare([orjson.dumps(e) for e in events], ScoringContext(champion))
    rows = for_estimator(prepared.batch, champion.runtime)  # as read_data gives them
    assert isinstance(rows, pd.DataFrame)
    model = fit(champion, rows.iloc[:200], y[:200], seed=0)
    path = write_candidate(tmp_path / "cand", model, champion, version="2",
                           sample=rows.iloc[200:], threshold=0.5, metrics={},
                           reference=ReferenceHistogram.from_scores([0.1]), lineage={},
                           created_at="2026-01-01T00:00:00+00:00")
    specs = load_checked(path).manifest.feature_specs
    assert [(f.name, f.type, f.missing) for f in specs] == [
        (f.name, f.type, f.missing) for f in champion.manifest.feature_specs]
    assert specs[1].categories == ("de", "fr", "it")  # what the candidate itself accepts
    sample = load_checked(path).manifest.self_test
    assert sample is not None and {e["country"] for e in sample.events} <= {"de", "fr", "it"}


def test_a_joblib_champion_loads_only_with_allow_pickle(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    save(store.version_path("unit", "1"), logistic(), fmt="joblib")
    (store.folder("unit") / "current").write_text("1\n")
    s = RetrainSettings(model=str(store.folder("unit")))
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        champion_of(s)
    _, champion = champion_of(dataclasses.replace(s, allow_pickle=True))
    assert champion.manifest.artifact.endswith(".joblib")


def test_no_promotion_when_the_champion_changed_during_the_run(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    for version in ("1", "2", "3"):
        put(store, version)
    store.promote("unit", "3")  # made current while a run compared 2 with 1
    c = Compared("unit", "1", "2", {}, {}, (0.5, 0.5), (0, 1), (0, 1))
    decision = Decision(True, ())
    with pytest.raises(RetrainError, match="unit 3 was made current during the run"):
        apply(RetrainSettings(), StoreRegistry(store.folder("unit")), c, decision, Policy(),
              "promoted", 0)
    assert store.current("unit").name == "3"
