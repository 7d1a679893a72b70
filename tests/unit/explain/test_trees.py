"""worker/explain/trees.py: a tree ensemble's reasons are shap's own TreeSHAP values, and
they add up to the ensemble's additive output (log-odds for boosting, the probability for a
forest, the value for regression)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import shap  # the dev extra installs it (scoring-worker[explain])
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)

from tests.unit.helpers import FEATURES, event, save, training_data
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.explain import ExplainError
from worker.explain.trees import NO_SHAP
from worker.model.bundle import load_bundle

MODELS: dict[str, Any] = {
    "hgb": lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0),
    "gb": lambda: GradientBoostingClassifier(n_estimators=30, random_state=0),
    "rf": lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
    "hgb-regression": lambda: HistGradientBoostingRegressor(max_iter=30, random_state=0),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_tree_reasons_are_shap_s_own_and_add_up(tmp_path: Path, kind: str) -> None:
    x, y = training_data(n=500, width=3)
    regression = kind.endswith("regression")
    target = x @ np.array([1.0, 2.0, -3.0]) if regression else y
    model = MODELS[kind]().fit(x, target)
    bundle = load_bundle(save(tmp_path, model, task="regression" if regression else "binary"))
    rows = x[:40]
    events = [event(i, a=float(r[0]), b=float(r[1]), c=float(r[2])) for i, r in enumerate(rows)]
    out = score_values([orjson.dumps(e) for e in events], ScoringContext(bundle, explain=3), 1)
    assert all(isinstance(o, Prediction) for o in out)
    own = shap.TreeExplainer(model)
    values = np.asarray(own.shap_values(rows))
    expected = np.ravel(own.expected_value)
    if values.ndim == 3:
        values, base = values[:, :, 1], expected[1]
    else:
        base = expected[0]
    if regression:
        additive, output = model.predict(rows), "raw"
    elif kind == "rf":
        additive, output = model.predict_proba(rows)[:, 1], "probability"
    else:
        additive, output = model.decision_function(rows), "log_odds"
    for i, p in enumerate(out):
        reasons = p.record["reasons"]  # type: ignore[union-attr]
        assert reasons["output"] == output
        assert reasons["baseline"] == base
        assert {r["feature"]: r["contribution"] for r in reasons["top"]} == dict(
            zip(FEATURES, values[i].tolist(), strict=True))
        total = reasons["baseline"] + sum(r["contribution"] for r in reasons["top"])
        assert abs(total - additive[i]) <= 1e-6, (kind, i)


def test_without_shap_a_tree_model_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = training_data(n=200, width=3)
    bundle = load_bundle(save(tmp_path, HistGradientBoostingClassifier(max_iter=5).fit(x, y)))
    monkeypatch.setitem(sys.modules, "shap", None)  # what an install without the extra sees
    with pytest.raises(ExplainError, match="needs shap") as caught:
        ScoringContext(bundle, explain=3)
    assert str(caught.value) == NO_SHAP
    ScoringContext(bundle)  # served without --explain, shap or not
