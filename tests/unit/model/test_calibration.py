"""The bundle's calibration map: fitted monotone on a labeled holdout, stored in the
manifest with the reference's size, refused when malformed, and a warning when the
reference rows look like training rows."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from worker.model import load_bundle, write_bundle
from worker.model.calibration import (
    RATE_UNITS,
    Calibration,
    CalibrationError,
    fit_calibration,
    pool_adjacent_violators,
)
from worker.model.manifest import Manifest, ManifestError

FEATURES = ["a", "b", "c"]


def write(tmp_path: Path, model: object, **kwargs: object) -> Path:
    return write_bundle(tmp_path / "m", model, name="m", version="1", task="binary",
                        features=FEATURES, **kwargs)  # type: ignore[arg-type]


def logistic_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    p = 1.0 / (1.0 + np.exp(-(x @ np.array([1.5, -1.0, 0.5]) - 2.0)))
    return x, (rng.random(n) < p).astype(np.int64)


def test_the_map_is_monotone_with_the_threshold_as_a_cut_and_enough_rows_per_step() -> None:
    rng = np.random.default_rng(1)
    scores = rng.beta(1.0, 6.0, 20_000)
    outcomes = rng.random(20_000) < scores
    cal = fit_calibration(scores, outcomes, threshold=0.3)
    assert 0.3 in cal.cuts
    assert list(cal.rates) == sorted(cal.rates)
    assert cal.size == 20_000
    below = [n for c, n in zip((-1.0, *cal.cuts), cal.rows, strict=True) if c < 0.3]
    assert min(below) >= 200
    assert all(r * RATE_UNITS == round(r * RATE_UNITS) for r in cal.rates)
    # Calibrated scores: every step's rate is the mean score of its rows, within four
    # binomial standard errors of its row count.
    step = np.searchsorted(cal.cuts, scores, side="right")
    for k, (rate, n) in enumerate(zip(cal.rates, cal.rows, strict=True)):
        mean = scores[step == k].mean()
        assert abs(rate - mean) < 4 * np.sqrt(mean * (1 - mean) / n) + 1e-3, k


def test_the_rates_are_the_weighted_isotonic_fit_of_the_bins() -> None:
    rng = np.random.default_rng(2)
    values, weights = rng.random(40), rng.integers(1, 50, 40).astype(float)
    iso = IsotonicRegression().fit(np.arange(40), values, sample_weight=weights)
    assert np.allclose(pool_adjacent_violators(values, weights), iso.predict(np.arange(40)),
                       atol=1e-12)


def test_a_step_is_bisect_right_of_the_cuts_as_in_numpy() -> None:
    cal = Calibration((0.1, 0.5), (0.0, 0.25, 0.5), (10, 10, 10), (0, 3, 5))
    assert [cal.step(s) for s in (0.0, 0.1, 0.3, 0.5, 1.0)] == [0, 1, 1, 2, 2]
    scores = np.array([0.0, 0.1, 0.3, 0.5, 1.0])
    assert cal.units_of(scores).tolist() == [cal.units(s) for s in scores.tolist()]


@pytest.mark.parametrize("change", [
    {"rates": [0.5, 0.25, 0.75]}, {"cuts": [0.5, 0.1]}, {"rows": [1, 2]},
    {"rates": [0.0, 0.3, 1.0]}, {"positives": [0, 11, 0]}, {"size": 7}, {"cuts": "x"},
])
def test_a_malformed_table_is_refused_in_one_line(change: dict[str, object]) -> None:
    table = {"cuts": [0.1, 0.5], "rates": [0.0, 0.25, 0.5], "rows": [10, 10, 10],
             "positives": [0, 3, 5], "size": 30}
    with pytest.raises(CalibrationError):
        Calibration.parse({**table, **change})


def test_too_few_reference_rows_is_refused() -> None:
    with pytest.raises(CalibrationError, match="at least 400"):
        fit_calibration(np.linspace(0, 1, 100), np.zeros(100), 0.5)


def test_write_bundle_stores_the_map_with_the_reference_size(tmp_path: Path) -> None:
    x, y = logistic_data(12_000)
    model = LogisticRegression().fit(x[:6000], y[:6000])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a true holdout: no warning
        write(tmp_path, model, sample=x[6000:], reference=x[6000:],
              reference_labels=y[6000:])
    manifest = orjson.loads((tmp_path / "m" / "model.json").read_bytes())
    assert manifest["calibration"]["size"] == 6000
    bundle = load_bundle(tmp_path / "m")
    cal = bundle.manifest.calibration
    assert cal is not None and cal.size == 6000 and 0.5 in cal.cuts
    assert Manifest.parse(bundle.manifest.to_dict()).calibration == cal


def test_a_frame_reference_is_read_by_feature_name(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    x, y = logistic_data(4000)
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    model = LogisticRegression().fit(frame[:2000], y[:2000])
    shuffled = frame[2000:][["c", "a", "b"]]
    write(tmp_path, model, sample=frame[2000:], reference=shuffled,
          reference_labels=y[2000:])
    cal = load_bundle(tmp_path / "m").manifest.calibration
    assert cal is not None and cal.size == 2000


def test_training_rows_as_reference_warn(tmp_path: Path) -> None:
    x, y = logistic_data(3000)
    y = (x[:, 0] > 0.3).astype(np.int64)  # separable: a forest is perfect on its own rows
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    with pytest.warns(UserWarning, match="looks like training rows"):
        write(tmp_path, forest, sample=x[:100], reference=x, reference_labels=y)


def test_a_reference_far_above_the_holdout_metrics_warns(tmp_path: Path) -> None:
    x, y = logistic_data(4000)
    model = LogisticRegression().fit(x, y)
    with pytest.warns(UserWarning, match="above the bundle's holdout roc_auc"):
        write(tmp_path, model, sample=x[:100], metrics={"roc_auc": 0.6}, reference=x,
                     reference_labels=y)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"reference_labels": [0, 1]}, "needs reference="),
    ({"reference": "rows", "reference_labels": [0, 1, 1]}, "one label per reference row"),
    ({"reference": "rows", "reference_labels": "labels-2"}, "not classes"),
])
def test_bad_reference_arguments_are_one_line(tmp_path: Path, kwargs: dict[str, object],
                                              match: str) -> None:
    x, y = logistic_data(1000)
    model = LogisticRegression().fit(x, y)
    given = {k: x[:600] if v == "rows" else (np.where(y[:600] == 1, 2, 0) if v == "labels-2"
                                             else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        write(tmp_path, model, sample=x[:100], **given)  # type: ignore[arg-type]


def test_a_malformed_calibration_in_model_json_is_a_manifest_error() -> None:
    data = {"name": "m", "version": "1", "task": "binary", "features": ["a"],
            "artifact": "model.skops", "sha256": "0" * 64,
            "calibration": {"cuts": [], "rates": [0.3], "rows": [0], "positives": [0]}}
    with pytest.raises(ManifestError, match="calibration"):
        Manifest.parse(data)
