"""Benchmark models beyond lr30 and demo: the kinds of model teams train (see
docs/benchmarks/model-kinds.md).

- ``ct``: Pipeline(ColumnTransformer(OneHotEncoder on 2 string columns, StandardScaler
  on 10 numbers), LogisticRegression) fitted on a DataFrame (the DataFrame path).
- ``rf200``: RandomForestClassifier(200 trees, depth 10) on 10 numbers (an array).
- ``hgb``: HistGradientBoostingClassifier(100 iterations) on 10 numbers (an array).
- ``lgbm``: LightGBM's LGBMClassifier(100 trees, 31 leaves) on 10 numbers (joblib bundle).
- ``xgb``: XGBoost's XGBClassifier(100 trees, depth 6) on 10 numbers (joblib bundle).

Each builder writes a bundle (``runtime`` "sklearn" or "onnx") and returns it with a
flat JSON Schema for its events; ``events`` makes events with ids ``<kind>-<n>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from worker.model import write_bundle

KINDS: Final = ("ct", "rf200", "hgb", "lgbm", "xgb")
#: Kinds whose bundle is a pickle (skops does not know their types): workers need
#: ``--allow-pickle true``.
PICKLED: Final = ("lgbm", "xgb")
NUMBERS: Final = tuple(f"x{i}" for i in range(10))
STRINGS: Final = {"country": ["de", "fr", "us", "gb", "es", "it", "nl", "pl"],
                  "channel": ["web", "app", "pos", "atm", "moto"]}


def frame(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    data: dict[str, Any] = {k: rng.choice(v, n) for k, v in STRINGS.items()}
    data.update({name: rng.normal(size=n) for name in NUMBERS})
    df = pd.DataFrame(data)
    logit = df["x0"] - 0.5 * df["x1"] + (df["country"] == "us") - (df["channel"] == "pos")
    return df, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def estimator(kind: str) -> Any:
    if kind == "ct":
        columns = ColumnTransformer([
            ("strings", OneHotEncoder(handle_unknown="ignore"), list(STRINGS)),
            ("numbers", StandardScaler(), list(NUMBERS)),
        ])
        return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=1000))])
    if kind == "rf200":
        return RandomForestClassifier(n_estimators=200, max_depth=10, random_state=0)
    if kind == "lgbm":
        import lightgbm

        return lightgbm.LGBMClassifier(n_estimators=100, num_leaves=31, verbose=-1)
    if kind == "xgb":
        import xgboost

        return xgboost.XGBClassifier(n_estimators=100, max_depth=6)
    return HistGradientBoostingClassifier(max_iter=100, random_state=0)


def build(kind: str, out: Path, runtime: str = "sklearn", n: int = 20_000) -> Path:
    df, y = frame(np.random.default_rng(5), n)
    x: Any = df if kind == "ct" else df[list(NUMBERS)].to_numpy()
    model = estimator(kind).fit(x[: n - 1000] if kind != "ct" else x.iloc[: n - 1000],
                                y[: n - 1000])
    sample = x.iloc[n - 1000 :] if kind == "ct" else x[n - 1000 :]
    features = None if kind == "ct" else list(NUMBERS)
    return write_bundle(out, model, name=f"{kind}-bench", version="1", task="binary",
                        sample=sample, features=features, runtime=runtime,
                        fmt="joblib" if kind in PICKLED else "skops")


def schema(kind: str) -> dict[str, Any]:
    props: dict[str, Any] = {"id": {"type": "string", "minLength": 1}, "ts": {"type": "integer"}}
    props.update({name: {"type": "number"} for name in NUMBERS})
    required = ["id", *NUMBERS]
    if kind == "ct":
        props.update({name: {"type": "string", "enum": v} for name, v in STRINGS.items()})
        required += list(STRINGS)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": required, "properties": props}


def events(kind: str, rng: np.random.Generator, n: int, start: int) -> list[dict[str, Any]]:
    df, _ = frame(rng, n)
    if kind != "ct":
        df = df[list(NUMBERS)]
    rows: list[dict[str, Any]] = df.to_dict("records")
    return [{"id": f"{kind}-{start + i}", **row} for i, row in enumerate(rows)]
