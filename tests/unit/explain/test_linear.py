"""worker/explain/linear.py: reasons of linear models add up to the log-odds, equal a hand
computation for a one-hot + imputer + logistic regression pipeline, and predictions without
--explain are the bytes they were before reasons existed."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, StandardScaler

from tests.unit.helpers import ROOT, event, multiclass_bundle, save, training_data
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.explain import ExplainError
from worker.model import write_bundle
from worker.model.bundle import ModelBundle, load_bundle

#: Predictions of the hand-set model below before reasons existed (main at 90a956a).
GOLDEN = [
    b'{"id":"e0","score":0.96036116089903,"label":1,"model":"unit","model_version":"7",'
    b'"event_ts":1700000000000,"scored_at":1}',
    b'{"id":"e1","score":0.9688561694652216,"label":1,"model":"unit","model_version":"7",'
    b'"event_ts":1700000000001,"scored_at":1}',
    b'{"id":"e2","score":0.9755769099458929,"label":1,"model":"unit","model_version":"7",'
    b'"event_ts":1700000000002,"scored_at":1}',
]


def scored(ctx: ScoringContext, events: list[dict[str, Any]]) -> list[Prediction]:
    out = score_values([orjson.dumps(e) for e in events], ctx, 1)
    assert all(isinstance(o, Prediction) for o in out), out
    return out  # type: ignore[return-value]


def total(reasons: dict[str, Any]) -> float:
    return float(reasons["baseline"] + sum(r["contribution"] for r in reasons["top"]))


def payments(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"country": rng.choice(["de", "fr", "us"], n).astype(object),
                       "amount": np.round(rng.lognormal(3, 1, n), 2)})
    df.loc[rng.random(n) < 0.15, "country"] = None
    df.loc[rng.random(n) < 0.1, "amount"] = np.nan
    logit = np.log(df["amount"].fillna(20)) - 3 + (df["country"] == "us")
    return df, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)


@pytest.fixture(scope="module")
def onehot(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """One-hot string column with missing values (imputed), an imputed number, logistic."""
    df, y = payments(2000, 3)
    columns = ColumnTransformer([
        ("country", make_pipeline(SimpleImputer(strategy="constant", fill_value="none"),
                                  OneHotEncoder(handle_unknown="ignore")), ["country"]),
        ("amount", SimpleImputer(strategy="mean"), ["amount"]),
    ])
    model = make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(df, y)
    folder = write_bundle(tmp_path_factory.mktemp("onehot"), model, name="pay", version="1",
                          task="binary", sample=df.iloc[:200])
    return load_bundle(folder)


def test_a_one_hot_imputer_pipeline_s_reasons_equal_a_hand_computation(
    onehot: ModelBundle,
) -> None:
    model = onehot.estimator
    encoder = model[0].named_transformers_["country"][-1]
    amount_fill = float(model[0].named_transformers_["amount"].statistics_[0])
    categories = list(encoder.categories_[0])
    coef, intercept = model[-1].coef_[0], float(model[-1].intercept_[0])

    def row(e: dict[str, Any]) -> list[float]:  # the transformed row, by hand
        country = e.get("country") or "none"
        amount = e.get("amount")
        return [float(country == c) for c in categories] + [
            amount_fill if amount is None else float(amount)]

    reference = np.array([row(e) for e in onehot.manifest.self_test.events])  # type: ignore[union-attr]
    mean = reference.mean(axis=0)
    events = [{"id": "a", "country": "us", "amount": 250.0},
              {"id": "b", "country": None, "amount": 3.5},
              {"id": "c", "country": "fr"},
              {"id": "d", "country": "mars", "amount": 20.0}]  # unseen: no one-hot column on
    ctx = ScoringContext(onehot, explain=2)
    n = len(categories)
    for e, p in zip(events, scored(ctx, events), strict=True):
        terms = coef * (np.array(row(e)) - mean)
        hand = {"country": float(terms[:n].sum()), "amount": float(terms[n])}
        reasons = p.record["reasons"]
        assert reasons["baseline"] == pytest.approx(intercept + float(coef @ mean), abs=1e-12)
        assert reasons["output"] == "log_odds"
        got = {r["feature"]: r["contribution"] for r in reasons["top"]}
        assert got == pytest.approx(hand, abs=1e-12)
        assert [r["feature"] for r in reasons["top"]] == sorted(hand, key=lambda k: -abs(hand[k]))
        assert {r["feature"]: r["value"] for r in reasons["top"]} == {
            "country": e.get("country"), "amount": e.get("amount")}
        logit = math.log(p.record["score"] / (1 - p.record["score"]))
        assert total(reasons) == pytest.approx(logit, abs=1e-6)


def kinds(folder: Path) -> dict[str, tuple[ModelBundle, list[dict[str, Any]]]]:
    """Linear bundles of each shape, with the rows their events are."""
    from worker.devtools.demo import make_lr30_bundle, train_demo

    out: dict[str, tuple[ModelBundle, list[dict[str, Any]]]] = {}
    for name, path in (("lr30", make_lr30_bundle(folder / "lr30", n=3000)),
                       ("demo", train_demo(folder / "demo", n=4000))):
        b = load_bundle(path)
        events = [dict(e, id=f"{name}-{i}") for i, e in enumerate(b.manifest.self_test.events)]  # type: ignore[union-attr]
        out[name] = (b, events)
    x, y = training_data(n=300, width=3)
    ridge = Ridge().fit(x, x @ np.array([1.0, 2.0, -3.0]) + y)
    b = load_bundle(save(folder / "ridge", ridge, task="regression"))
    out["ridge"] = (b, [event(i, a=float(r[0]), b=float(r[1]), c=int(i))
                              for i, r in enumerate(x[:50])])
    return out


def test_every_linear_kind_adds_up_to_its_log_odds(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = kinds(tmp_path)
    for name, (bundle, events) in found.items():
        ctx = ScoringContext(bundle, explain=len(bundle.features))
        preds = scored(ctx, events)
        from worker.explain.linear import reference_rows

        rows = ctx.extract(events, False).matrix
        model = bundle.estimator
        own = (model.predict(rows) if bundle.task == "regression"
               else model.decision_function(rows))
        got = np.array([total(p.record["reasons"]) for p in preds])
        assert np.abs(got - own).max() <= 1e-6, name
        assert reference_rows(bundle) is not None


def test_predictions_without_explain_are_the_bytes_they_were(tmp_path: Path) -> None:
    lr = LogisticRegression()
    lr.coef_, lr.intercept_ = np.array([[0.5, -0.25, 1.0]]), np.array([-0.125])
    lr.classes_, lr.n_features_in_ = np.array([0, 1]), 3
    bundle = load_bundle(save(tmp_path, lr))
    events = [event(i) for i in range(3)]
    assert [p.payload for p in scored(ScoringContext(bundle), events)] == GOLDEN
    explained = scored(ScoringContext(bundle, explain=1), events)
    schema = orjson.loads((ROOT / "schemas" / "prediction.schema.json").read_bytes())
    for p, golden in zip(explained, GOLDEN, strict=True):
        record = orjson.loads(p.payload)
        jsonschema.validate(record, schema)
        assert set(record) - set(orjson.loads(golden)) == {"reasons"}
        assert orjson.dumps({k: v for k, v in record.items() if k != "reasons"}) == golden


@pytest.mark.parametrize("make", ["knn", "poly", "multiclass"])
def test_a_model_without_an_exact_explainer_is_refused_in_one_line(
    tmp_path: Path, make: str
) -> None:
    x, y = training_data(n=200, width=3)
    if make == "multiclass":
        bundle = multiclass_bundle(tmp_path)
    else:
        model = (KNeighborsClassifier().fit(x, y) if make == "knn" else make_pipeline(
            PolynomialFeatures(2), StandardScaler(), LogisticRegression()).fit(x, y))
        bundle = load_bundle(save(tmp_path, model))
    with pytest.raises(ExplainError, match=r"^--explain: ") as caught:
        ScoringContext(bundle, explain=3)
    assert "\n" not in str(caught.value)
    ScoringContext(bundle)  # without --explain the model is served as before


class Refusing(LogisticRegression):
    """Raises on a row whose first feature is 99: the core bisects it out."""

    def predict_proba(self, x: Any) -> Any:
        if (np.asarray(x)[:, 0] == 99).any():
            raise ValueError("poisoned row")
        return super().predict_proba(x)


def test_rows_the_model_refuses_leave_the_others_reasons_aligned(tmp_path: Path) -> None:
    import dataclasses

    from worker.model.runtimes.sklearn import SklearnRuntime

    x, y = training_data(n=200, width=3)
    model = Refusing().fit(x, y)
    plain = load_bundle(save(tmp_path, LogisticRegression().fit(x, y)))
    bundle = dataclasses.replace(plain, estimator=model, runtime=SklearnRuntime(model, "binary"))
    events = [event(i, a=99.0 if i == 2 else float(i)) for i in range(5)]
    out = score_values([orjson.dumps(e) for e in events], ScoringContext(bundle, explain=3), 1)
    assert not isinstance(out[2], Prediction)
    for e, p in zip(events, out, strict=True):
        if isinstance(p, Prediction):
            reasons = p.record["reasons"]
            assert {r["feature"]: r["value"] for r in reasons["top"]} == {
                k: e[k] for k in ("a", "b", "c")}
            row = np.array([[e["a"], e["b"], e["c"]]])
            assert total(reasons) == pytest.approx(float(model.decision_function(row)[0]),
                                                   abs=1e-9)
