"""worker/explain/lightgbm_contrib.py and xgboost_contrib.py: LightGBM and XGBoost models are
explained by their own contributions (``pred_contrib`` / ``pred_contribs``), which equal the
library's output, and add up with the baseline to the raw margin; an objective whose output
is not that margin (or its logistic function) is refused in one line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pytest
import xgboost

from tests.unit.helpers import FEATURES, event, save, training_data
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.explain import ExplainError
from worker.explain.lightgbm_contrib import LightGBMExplainer
from worker.explain.xgboost_contrib import XGBoostExplainer
from worker.model.bundle import load_bundle

MODELS: dict[str, Any] = {
    "lgbm": lambda: lightgbm.LGBMClassifier(n_estimators=40, num_leaves=15, verbose=-1),
    "xgb": lambda: xgboost.XGBClassifier(n_estimators=40, max_depth=4),
    "lgbm-regression": lambda: lightgbm.LGBMRegressor(n_estimators=40, verbose=-1),
    "xgb-regression": lambda: xgboost.XGBRegressor(n_estimators=40, max_depth=4),
}


def own_contributions(model: Any, rows: Any) -> Any:
    """The library's own call, outside the worker."""
    if isinstance(model, lightgbm.LGBMModel):
        return model.predict(rows, pred_contrib=True)
    return model.get_booster().predict(xgboost.DMatrix(rows), pred_contribs=True)


def margin(model: Any, rows: Any) -> Any:
    if isinstance(model, lightgbm.LGBMModel):
        return model.predict(rows, raw_score=True)
    return model.predict(rows, output_margin=True)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_booster_reasons_are_the_library_s_own_and_add_up_to_the_margin(
    tmp_path: Path, kind: str
) -> None:
    x, y = training_data(n=600, width=3)
    x[::7, 1] = np.nan  # missing values take the trees' default branches
    regression = kind.endswith("regression")
    target = np.nan_to_num(x) @ np.array([1.0, 2.0, -3.0]) if regression else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MODELS[kind]().fit(x, target)
        bundle = load_bundle(save(tmp_path, model, task="regression" if regression else "binary",
                                  fmt="joblib", sample=x[:64]), allow_pickle=True)
    rows = x[:60]
    events = [event(i, a=float(r[0]), b=None if np.isnan(r[1]) else float(r[1]),
                    c=float(r[2])) for i, r in enumerate(rows)]
    ctx = ScoringContext(bundle, explain=3)
    assert isinstance(ctx.explainer, LightGBMExplainer | XGBoostExplainer)
    out = score_values([orjson.dumps(e) for e in events], ctx, 1)
    assert all(isinstance(o, Prediction) for o in out), out
    own = np.asarray(own_contributions(model, rows), dtype=np.float64)
    raw = np.asarray(margin(model, rows), dtype=np.float64)
    # XGBoost computes in float32: its contributions add up to its margin within that
    tolerance = 1e-9 if kind.startswith("lgbm") else 1e-5
    for i, p in enumerate(out):
        reasons = p.record["reasons"]  # type: ignore[union-attr]
        assert reasons["output"] == ("raw" if regression else "log_odds")
        assert reasons["baseline"] == own[i, -1]
        assert {r["feature"]: r["contribution"] for r in reasons["top"]} == dict(
            zip(FEATURES, own[i, :-1].tolist(), strict=True))
        total = reasons["baseline"] + sum(r["contribution"] for r in reasons["top"])
        assert abs(total - raw[i]) <= tolerance * max(1.0, abs(raw[i])), (kind, i)
        if not regression:
            score = p.record["score"]  # type: ignore[index]
            assert abs(1.0 / (1.0 + np.exp(-total)) - score) <= 1e-6


def test_a_booster_whose_output_is_not_its_margin_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    x, _ = training_data(n=400, width=3)
    counts = np.random.default_rng(1).poisson(np.exp(0.5 * x[:, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lightgbm.LGBMRegressor(objective="poisson", n_estimators=20,
                                       verbose=-1).fit(x, counts)
        bundle = load_bundle(save(tmp_path, model, task="regression", fmt="joblib"),
                             allow_pickle=True)
    with pytest.raises(ExplainError, match=r"^--explain: the contributions of this "
                                           r"LGBMRegressor do not add up") as caught:
        ScoringContext(bundle, explain=3)
    assert "\n" not in str(caught.value)
    ScoringContext(bundle)  # served without --explain as before
