"""worker/explain/piped.py: a Pipeline of preprocessing then a tree model is explained in
the transformed space by the last step's own explainer, and each column's contribution is
summed into its input feature (one-hot columns into their field, an imputer's indicator into
the feature it flags); a pipeline whose columns mix features is refused in one line."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pandas as pd
import pytest
import shap
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tests.unit.explain.test_linear import payments
from tests.unit.helpers import event, save, training_data
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.explain import ExplainError, FramedExplainer
from worker.explain.piped import PipelineExplainer
from worker.model import write_bundle
from worker.model.bundle import load_bundle


def scored(ctx: ScoringContext, events: list[dict[str, Any]]) -> list[Prediction]:
    out = score_values([orjson.dumps(e) for e in events], ctx, 1)
    assert all(isinstance(o, Prediction) for o in out), out
    return out  # type: ignore[return-value]


def test_one_hot_and_indicator_columns_sum_back_into_their_fields(tmp_path: Path) -> None:
    df, y = payments(2000, 4)
    columns = ColumnTransformer([
        ("country", make_pipeline(SimpleImputer(strategy="constant", fill_value="none"),
                                  OneHotEncoder(handle_unknown="ignore",
                                                sparse_output=False)), ["country"]),
        ("amount", SimpleImputer(strategy="median", add_indicator=True), ["amount"]),
    ])
    model = make_pipeline(columns, HistGradientBoostingClassifier(max_iter=40,
                                                                  random_state=0)).fit(df, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_bundle(write_bundle(tmp_path / "b", model, name="pay", version="1",
                                          task="binary", sample=df.iloc[:200]))
    ctx = ScoringContext(bundle, explain=2)
    # scored from typed columns (routed.py), explained on the frame they make
    assert bundle.runtime.input == "columns"
    assert isinstance(ctx.explainer, FramedExplainer)
    assert isinstance(ctx.explainer.inner, PipelineExplainer)
    events = [{"id": "a", "country": "us", "amount": 250.0},
              {"id": "b", "country": None, "amount": 3.5},
              {"id": "c", "country": "fr"},
              {"id": "d", "country": "mars", "amount": 20.0}]
    frame = pd.DataFrame([{"country": e.get("country"), "amount": e.get("amount", np.nan)}
                          for e in events]).astype({"country": object})
    z = model[0].transform(frame)
    own = shap.TreeExplainer(model[-1])
    values = np.asarray(own.shap_values(z))
    categories = len(model[0].named_transformers_["country"][-1].categories_[0])
    assert z.shape[1] == categories + 2  # the one-hot columns, amount, amount's indicator
    for i, p in enumerate(scored(ctx, events)):
        hand = {"country": float(values[i, :categories].sum()),
                "amount": float(values[i, categories:].sum())}
        reasons = p.record["reasons"]
        assert reasons["output"] == "log_odds"
        assert reasons["baseline"] == float(np.ravel(own.expected_value)[0])
        got = {r["feature"]: r["contribution"] for r in reasons["top"]}
        assert got == pytest.approx(hand, abs=1e-12)
        logit = math.log(p.record["score"] / (1 - p.record["score"]))
        total = reasons["baseline"] + sum(got.values())
        assert total == pytest.approx(logit, abs=1e-6)


def test_a_one_to_one_pipeline_ending_in_lightgbm_gives_lightgbm_s_own(tmp_path: Path) -> None:
    x, y = training_data(n=500, width=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), lightgbm.LGBMClassifier(
            n_estimators=30, verbose=-1)).fit(x, y)
        bundle = load_bundle(save(tmp_path, model, fmt="joblib", sample=x[:64]),
                             allow_pickle=True)
    rows = x[:20]
    events = [event(i, a=float(r[0]), b=float(r[1]), c=float(r[2])) for i, r in enumerate(rows)]
    own = model[-1].predict(model[0].transform(rows), pred_contrib=True)
    raw = model.predict(rows, raw_score=True)
    for i, p in enumerate(scored(ScoringContext(bundle, explain=3), events)):
        reasons = p.record["reasons"]
        assert {r["feature"]: r["contribution"] for r in reasons["top"]} == dict(
            zip("abc", own[i, :-1].tolist(), strict=True))
        total = reasons["baseline"] + sum(r["contribution"] for r in reasons["top"])
        assert abs(total - raw[i]) <= 1e-9


def test_a_pipeline_whose_columns_mix_features_is_refused_naming_the_step(
    tmp_path: Path,
) -> None:
    x, y = training_data(n=300, width=3)
    model = make_pipeline(PCA(2), HistGradientBoostingClassifier(max_iter=10)).fit(x, y)
    bundle = load_bundle(save(tmp_path, model))
    with pytest.raises(ExplainError, match=r"^--explain: cannot tell which inputs each "
                                           r"output of PCA comes from") as caught:
        ScoringContext(bundle, explain=3)
    assert "\n" not in str(caught.value)
    ScoringContext(bundle)  # without --explain the model is served as before
