"""worker.model.bundle: bundles written, loaded, and refused with one clear line."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from tests.unit.helpers import (
    FEATURES,
    PoisonEstimator,
    logistic,
    regression_bundle,
    save,
    training_data,
)
from worker.errors import ModelLoadError
from worker.model.bundle import load_bundle, sha256_file
from worker.model.manifest import ReferenceHistogram


def edit_manifest(folder: Path, **changes: Any) -> None:
    path = folder / "model.json"
    data = orjson.loads(path.read_bytes())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_bytes(orjson.dumps(data))


def refusal(path: Path, **kwargs: Any) -> str:
    with pytest.raises(ModelLoadError) as exc:
        load_bundle(path, **kwargs)
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
def test_round_trip_keeps_manifest_and_predictions(tmp_path: Path, fmt: Any) -> None:
    model = logistic()
    histogram = ReferenceHistogram.from_scores([0.1, 0.2, 0.9], bins=4)
    folder = save(tmp_path / fmt, model, fmt=fmt, threshold=0.3,
                  metrics={"roc_auc": np.float64(0.9), "bad": float("nan")},
                  reference_histogram=histogram)
    bundle = load_bundle(folder, allow_pickle=fmt == "joblib")
    m = bundle.manifest
    assert (m.name, m.version, m.task, m.features) == ("unit", "7", "binary", FEATURES)
    assert m.artifact == f"model.{fmt}"
    assert m.sha256 == sha256_file(folder / m.artifact)
    assert m.threshold == 0.3
    assert m.classes == (0, 1)
    assert m.metrics == {"roc_auc": 0.9}  # non-finite metrics are not written
    assert m.reference_histogram == histogram
    assert histogram.edges == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert histogram.counts == (2, 0, 0, 1)
    assert bundle.classes == (0, 1) and bundle.positive_index == 1
    assert bundle.path == folder
    x, _ = training_data(n=20)
    np.testing.assert_array_equal(bundle.estimator.predict_proba(x), model.predict_proba(x))


def test_histogram_may_be_given_as_a_mapping(tmp_path: Path) -> None:
    histogram_dict = {"edges": [0, 0.5, 1], "counts": [3, 1]}
    folder = save(tmp_path, logistic(), reference_histogram=histogram_dict)
    histogram = load_bundle(folder).manifest.reference_histogram
    assert histogram == ReferenceHistogram(edges=(0.0, 0.5, 1.0), counts=(3.0, 1.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        save(tmp_path, logistic(), reference_histogram={"edges": [1, 0], "counts": [3]})


def test_model_json_path_is_accepted_and_loading_is_repeatable(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic())
    first = load_bundle(folder / "model.json")
    second = load_bundle(folder)
    assert first.manifest == second.manifest
    assert first.estimator is not second.estimator


def test_default_threshold_and_regression_bundle(tmp_path: Path) -> None:
    assert load_bundle(save(tmp_path / "b", logistic())).threshold == 0.5
    bundle = regression_bundle(tmp_path / "r")
    assert bundle.classes == () and bundle.positive_index is None


def test_missing_model_json(tmp_path: Path) -> None:
    assert "model.json not found" in refusal(tmp_path)


def test_invalid_json(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic())
    (folder / "model.json").write_text("{oops")
    message = refusal(folder)
    assert "model.json is not valid JSON" in message
    assert str(folder / "model.json") in message


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"features": None}, "no 'features' list"),
        ({"features": []}, "'features' must be a non-empty list"),
        ({"features": ["a", "a", "b"]}, "duplicate features: a"),
        ({"task": "ranking"}, "unknown task 'ranking'"),
        ({"name": ""}, "'name' must be a non-empty string"),
        ({"sha256": "abc"}, "'sha256' must be 64 hexadecimal digits"),
        ({"threshold": 1.5}, "'threshold' must be a number in [0, 1]"),
        ({"artifact": "../elsewhere/model.skops"}, "must be a bare file name"),
        ({"artifact": "model.pkl"}, "must end in .skops or .joblib"),
        ({"artifact": "absent.skops"}, "artifact absent.skops not found"),
        ({"classes": [1, 0]}, "manifest classes [1, 0] differ from the estimator's [0, 1]"),
        ({"reference_histogram": {"edges": [0, 1], "counts": [1, 2]}}, "len(edges)"),
    ],
)
def test_manifest_problems_are_refused(
    tmp_path: Path, changes: dict[str, Any], fragment: str
) -> None:
    folder = save(tmp_path, logistic())
    edit_manifest(folder, **changes)
    message = refusal(folder)
    assert fragment in message
    assert message.startswith(f"model bundle {folder / 'model.json'}: ")


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic())
    with (folder / "model.skops").open("ab") as handle:
        handle.write(b"tampered")
    assert "sha256 mismatch for model.skops" in refusal(folder)


class _Boobytrap:
    """Unpickling this creates a file: proof of code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_joblib_is_not_unpickled_when_sha256_differs(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic(), fmt="joblib")
    marker = tmp_path / "pwned"
    (folder / "model.joblib").write_bytes(pickle.dumps(_Boobytrap(str(marker))))
    assert "sha256 mismatch" in refusal(folder)
    assert not marker.exists()
    edit_manifest(folder, sha256=sha256_file(folder / "model.joblib"))  # hash matches now ...
    assert "is a pickle (.joblib)" in refusal(folder)  # ... still refused without allow_pickle
    assert not marker.exists()


def test_n_features_mismatch(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic(width=4), features=("a", "b", "c", "d"))
    edit_manifest(folder, features=["a", "b", "c"])
    assert "estimator expects 4 features, manifest lists 3" in refusal(folder)


# Writing the bundle runs its self-test on an array sample: scikit-learn warns that the names
# it was given by hand are missing, which is this test's point.
@pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
def test_feature_names_in_mismatch_names_the_first_difference(tmp_path: Path) -> None:
    model = logistic()
    model.feature_names_in_ = np.array(["a", "c", "b"], dtype=object)
    folder = save(tmp_path, model)
    edit_manifest(folder, features=["a", "b", "c"])
    assert "feature 1 is 'c' in the estimator but 'b' in the manifest" in refusal(folder)


def test_joblib_loads_only_when_pickle_is_allowed(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic(), fmt="joblib")
    message = refusal(folder)
    assert message.endswith("model.joblib is a pickle (.joblib): loading it runs any code it "
                            "contains, and the sha256 beside it only detects corruption, not "
                            "tampering; set allow_pickle = true (--allow-pickle) to load it "
                            "anyway, or write the bundle as .skops")
    assert load_bundle(folder, allow_pickle=True).manifest.artifact == "model.joblib"


def test_classifier_task_needs_predict_proba(tmp_path: Path) -> None:
    x, y = training_data()
    folder = save(tmp_path, LinearRegression().fit(x, y), task="regression")
    edit_manifest(folder, task="binary")
    assert "task 'binary' needs predict_proba(), which LinearRegression" in refusal(folder)


def test_binary_task_needs_two_classes(tmp_path: Path) -> None:
    x, _ = training_data()
    model = LogisticRegression().fit(x, np.digitize(x[:, 0], [-0.5, 0.5]))
    folder = save(tmp_path, model, task="multiclass")
    edit_manifest(folder, task="binary", classes=None)
    assert "task 'binary' needs 2 classes, estimator has 3" in refusal(folder)


def test_skops_trusts_exactly_the_types_its_manifest_recorded(tmp_path: Path) -> None:
    x, y = training_data()
    folder = save(tmp_path, PoisonEstimator().fit(x, y), fmt="skops")
    man = orjson.loads((folder / "model.json").read_bytes())
    assert man["trusted_types"] == ["tests.unit.helpers.PoisonEstimator"]
    load_bundle(folder)
    edit_manifest(folder, trusted_types=["sklearn.tree._tree.Tree"])  # another type only
    message = refusal(folder)
    assert message.endswith("skops artifact needs types its manifest does not trust: "
                            "tests.unit.helpers.PoisonEstimator")


def test_tree_models_record_their_types_and_operators_may_add_more(tmp_path: Path) -> None:
    x, y = training_data()
    model = HistGradientBoostingClassifier(max_iter=3).fit(x, y)
    folder = save(tmp_path, model)
    tree = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    assert orjson.loads((folder / "model.json").read_bytes())["trusted_types"] == [tree]
    bundle = load_bundle(folder)
    np.testing.assert_array_equal(bundle.estimator.predict_proba(x), model.predict_proba(x))
    edit_manifest(folder, trusted_types=[])  # an older bundle without the list ...
    assert tree in refusal(folder)
    load_bundle(folder, trusted_types=[tree])  # ... loads when the operator names the type


def test_write_bundle_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fitted on an array: give features"):
        save(tmp_path, logistic(), features=())
    with pytest.raises(ValueError, match="fmt"):
        save(tmp_path, logistic(), fmt="pickle")  # type: ignore[arg-type]


def test_unreadable_joblib_is_a_load_error(tmp_path: Path) -> None:
    folder = save(tmp_path, logistic(), fmt="joblib")
    artifact = folder / "model.joblib"
    artifact.write_bytes(b"not a pickle")
    edit_manifest(folder, sha256=sha256_file(artifact))
    assert "cannot load model.joblib: " in refusal(folder, allow_pickle=True)
