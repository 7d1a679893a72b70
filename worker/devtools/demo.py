"""Synthetic card transactions and the demo models (no Kafka, no clock).

Fraud follows a logistic pattern in the features (amount far above the card's
30-day average, night hours, risky merchants, young cards, bursts of activity,
far from home, foreign, online) plus an unobserved noise term, so a linear model
on log-scaled features ranks it well but not perfectly (holdout ROC AUC about
0.92). ``drifted=True`` moves both the traffic (more online, riskier merchants,
more activity) and the fraud itself (small amounts, daytime, low-risk
merchants): the trained model's scores shift up while its recall collapses, and
a model retrained on drifted traffic recovers (``scoring-worker retrain``).

The demo model only uses estimator types that skops trusts by default
(log1p, one-hot, scaler, logistic regression), so its ``.skops`` bundle loads
without widening the trusted set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from worker.model.manifest import ReferenceHistogram
from worker.model.writer import write_bundle

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEMO_FEATURES: Final = (
    "amount",
    "hour",
    "merchant_risk",
    "card_age_days",
    "velocity_1h",
    "distance_km",
    "foreign",
    "online",
    "avg_amount_30d",
)
DEMO_MODEL_NAME: Final = "fraud-demo"
# The demo model's alert rules (the monitor's --config). Its healthy rolling recall is about
# 0.35 at its threshold, under the default rule's 0.6, so the default would fire on healthy
# traffic; 0.2 stays quiet then and fires on the drift (recall near 0.01).
DEMO_ALERTS: Final = """
[[alerts]]
name = "score_drift"
metric = "psi"
op = ">"
threshold = 0.25
min_count = 1000

[[alerts]]
name = "recall_low"
metric = "recall"
op = "<"
threshold = 0.2
min_count = 4000
"""
LR30_FEATURES: Final = tuple(f"f{i:02d}" for i in range(30))
LR30_MODEL_NAME: Final = "lr30-bench"

_INT_FEATURES: Final = frozenset({"hour", "velocity_1h", "foreign", "online"})
_HOUR_WEIGHTS: Final = np.array(
    [2, 1.2, 0.8, 0.6, 0.6, 0.9, 2, 4, 6, 7, 7.5, 8, 8.5, 8, 7.5, 7.5, 7.5, 8, 8, 7.5, 6.5, 5, 4, 3]
)
_LOG_COLUMNS: Final = [0, 3, 4, 5, 8]  # amounts, card age, velocity, distance
_HOUR_COLUMN: Final = 1
_MEAN_GAP_MS: Final = 40.0


def sample_transactions(
    rng: np.random.Generator, n: int, drifted: bool = False
) -> tuple[FloatArray, IntArray]:
    """Feature matrix (columns in DEMO_FEATURES order) and true labels (1 = fraud)."""
    avg = np.round(rng.lognormal(np.log(55.0), 0.7, n), 2)
    amount = np.round(avg * rng.lognormal(0.0, 0.7, n), 2)
    hour = rng.choice(24, n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    merchant_risk = np.round(rng.beta(2.0, 3.5 if drifted else 9.0, n), 4)
    card_age = np.round(rng.gamma(1.5, 500.0, n), 1)
    velocity = rng.poisson(1.5 if drifted else 0.4, n)
    distance = np.round(rng.lognormal(np.log(8.0), 1.1, n), 2)
    foreign = (rng.random(n) < (0.15 if drifted else 0.04)).astype(np.int64)
    online = (rng.random(n) < (0.75 if drifted else 0.35)).astype(np.int64)
    matrix = np.column_stack(
        [amount, hour, merchant_risk, card_age, velocity, distance, foreign, online, avg]
    ).astype(np.float64)
    logit = _fraud_logit(matrix, drifted) + rng.normal(0.0, 0.6, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return matrix, labels


def _fraud_logit(x: FloatArray, drifted: bool) -> FloatArray:
    amount, hour, risk, age, velocity, distance, foreign, online, avg = x.T
    ratio = np.log((amount + 1.0) / (avg + 1.0))
    night = ((hour <= 5) | (hour >= 23)).astype(np.float64)
    young = np.exp(-age / 60.0)
    far = np.log1p(distance)
    if drifted:
        # Card testing: small amounts at ordinary merchants in the daytime. A clear
        # pattern, so that a model retrained on it ranks it about as well as the first
        # model ranked the old one (ROC AUC about 0.9), while the old model ranks it
        # worse than chance.
        return np.asarray(
            -6.5 - 2.4 * ratio + 1.8 * (1.0 - night) - 6.0 * risk + 1.0 * young
            + 0.4 * velocity + 0.2 * far + 0.6 * online,
            dtype=np.float64,
        )
    return np.asarray(
        -10.0 + 2.4 * ratio + 2.3 * night + 7.0 * risk + 2.5 * young + 0.9 * velocity
        + 0.6 * far + 1.8 * foreign + 1.2 * online,
        dtype=np.float64,
    )


def make_events(
    rng: np.random.Generator,
    n: int,
    start_id: int,
    start_ts_ms: int,
    drifted: bool = False,
    include_label: bool = False,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Events per transaction.schema.json and their true labels.

    The label travels separately unless ``include_label`` (replays, backtests).
    """
    matrix, labels = sample_transactions(rng, n, drifted)
    gaps = rng.exponential(_MEAN_GAP_MS, n).astype(np.int64)
    stamps = (start_ts_ms + np.cumsum(gaps)).tolist()
    cards = rng.integers(0, 100_000, n).tolist()
    columns = [_column(matrix[:, k], name) for k, name in enumerate(DEMO_FEATURES)]
    label_list: list[int] = labels.tolist()
    events: list[dict[str, Any]] = []
    for i, values in enumerate(zip(*columns, strict=True)):
        event: dict[str, Any] = {
            "id": f"tx-{start_id + i}",
            "ts": stamps[i],
            "card_id": f"card-{cards[i]:05d}",
        }
        event.update(zip(DEMO_FEATURES, values, strict=True))
        if include_label:
            event["label"] = label_list[i]
        events.append(event)
    return events, label_list


def _column(values: FloatArray, name: str) -> list[Any]:
    column: list[Any] = (values.astype(np.int64) if name in _INT_FEATURES else values).tolist()
    return column


def demo_estimator() -> Pipeline:
    """Log-scaled amounts and counts, one-hot hour, standardised, logistic."""
    columns = ColumnTransformer(
        [
            ("log", FunctionTransformer(np.log1p), _LOG_COLUMNS),
            (
                "hour",
                OneHotEncoder(
                    categories=[list(range(24))], handle_unknown="ignore", sparse_output=False
                ),
                [_HOUR_COLUMN],
            ),
        ],
        remainder="passthrough",
    )
    return make_pipeline(columns, StandardScaler(), LogisticRegression(max_iter=2000))


def train_demo(out_dir: Path, seed: int = 7, n: int = 200_000, version: str = "1") -> Path:
    """Train the fraud demo model and write its .skops bundle into ``out_dir``."""
    rng = np.random.default_rng(seed)
    matrix, labels = sample_transactions(rng, n)
    n_train, n_val = int(n * 0.7), int(n * 0.1)
    train, val, hold = np.split(np.arange(n), [n_train, n_train + n_val])
    # Fitted on a bare ndarray: no feature_names_in_, the manifest owns the order.
    model = demo_estimator().fit(matrix[train], labels[train])
    threshold = best_f1_threshold(labels[val], model.predict_proba(matrix[val])[:, 1])
    scores = model.predict_proba(matrix[hold])[:, 1]
    return write_bundle(
        out_dir,
        model,
        name=DEMO_MODEL_NAME,
        version=version,
        task="binary",
        features=DEMO_FEATURES,
        sample=matrix[hold],
        fmt="skops",
        threshold=threshold,
        metrics=binary_metrics(labels[hold], scores, threshold),
        reference_histogram=ReferenceHistogram.from_scores(scores, bins=20),
        # The holdout, never the training rows: the monitor's estimates rest on this map (the
        # inputs' reference profile is taken from the same rows).
        reference=matrix[hold],
        reference_labels=labels[hold],
    )


def best_f1_threshold(labels: IntArray, scores: FloatArray) -> float:
    """The score threshold with the best F1 (0.5 when there is no positive)."""
    if not labels.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def binary_metrics(labels: IntArray, scores: FloatArray, threshold: float) -> dict[str, float]:
    """Holdout metrics; ranking ones need both classes and are left out otherwise."""
    decided = (scores >= threshold).astype(np.int64)
    metrics = {
        "recall": float(recall_score(labels, decided, zero_division=0)),
        "precision": float(precision_score(labels, decided, zero_division=0)),
        "accuracy": float(accuracy_score(labels, decided)),
        "brier": float(brier_score_loss(labels, scores)),
        "log_loss": float(log_loss(labels, scores, labels=[0, 1])),
        "positive_rate": float(labels.mean()),
        "n": float(len(labels)),
    }
    if 0 < labels.sum() < len(labels):
        metrics["roc_auc"] = float(roc_auc_score(labels, scores))
        metrics["average_precision"] = float(average_precision_score(labels, scores))
    return metrics


def make_lr30_events(rng: np.random.Generator, n: int, start_id: int) -> list[dict[str, Any]]:
    """Benchmark events: an id and 30 standard-normal features f00..f29."""
    rows: list[list[float]] = rng.standard_normal((n, len(LR30_FEATURES))).tolist()
    return [
        {"id": f"lr30-{start_id + i}", **dict(zip(LR30_FEATURES, row, strict=True))}
        for i, row in enumerate(rows)
    ]


def make_lr30_bundle(out_dir: Path, seed: int = 11, n: int = 20_000,
                     version: str = "1") -> Path:
    """A LogisticRegression on 30 numeric features, for the throughput benchmark."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, len(LR30_FEATURES)))
    weights = rng.normal(0.0, 0.5, len(LR30_FEATURES))
    logit = matrix @ weights - 1.0 + rng.normal(0.0, 0.5, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    model = LogisticRegression(max_iter=1000).fit(matrix, labels)
    scores = model.predict_proba(matrix)[:, 1]
    return write_bundle(
        out_dir,
        model,
        name=LR30_MODEL_NAME,
        version=version,
        task="binary",
        features=LR30_FEATURES,
        sample=matrix[-1000:],
        fmt="skops",
        metrics=binary_metrics(labels, scores, 0.5),
        reference_histogram=ReferenceHistogram.from_scores(scores, bins=20),
        reference=matrix,
    )
