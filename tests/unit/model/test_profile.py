"""The reference profile: quantile bins with exact counts, top-K categories with an other
share, missing counts; stored in model.json by write_bundle, read back strictly, and
optional (a bundle without one still loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from tests.unit.helpers import logistic, save, training_data
from worker.errors import ModelLoadError
from worker.model.bundle import load_bundle
from worker.model.feature_types import Feature
from worker.model.profile import (
    FeatureProfile,
    Profile,
    ProfileError,
    categorical_profile,
    numeric_profile,
    profile_of,
)
from worker.model.writer import write_bundle


def test_numeric_profile_bins_every_present_value_once() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(3.0, 1.0, 5_000)
    values[rng.random(5_000) < 0.1] = np.nan
    p = numeric_profile("amount", values, bins=10)
    present = values[~np.isnan(values)]
    assert (p.rows, p.missing) == (5_000, int(np.isnan(values).sum()))
    assert len(p.edges) == 9 and len(p.counts) == 10
    assert all(b > a for a, b in zip(p.edges, p.edges[1:], strict=False))
    # bin i holds the values with exactly i edges at or below them (outer bins open)
    recount = np.array([sum(e <= v for e in p.edges) for v in present.tolist()])
    assert p.counts == tuple(np.bincount(recount, minlength=10).tolist())
    assert (p.min, p.max) == (present.min(), present.max())
    assert max(p.counts) - min(p.counts) <= 2  # quantile bins: equally filled
    assert p.missing_rate == p.missing / 5_000


def test_ties_and_constants_keep_edges_strictly_increasing() -> None:
    hours = np.repeat(np.arange(24), [1000] + [10] * 23)
    p = numeric_profile("hour", hours, bins=20)
    assert all(b > a for a, b in zip(p.edges, p.edges[1:], strict=False))
    # the mass at 0 takes most quantiles: they collapse into one edge above it
    assert p.edges[0] > 0 and sum(p.counts) == hours.size and p.counts[0] >= 1000
    constant = numeric_profile("flag", np.ones(50), bins=10)
    assert constant.edges == () and constant.counts == (50,)
    empty = numeric_profile("gone", [None, None], bins=10)
    assert (empty.missing, empty.counts, empty.min) == (2, (0,), None)


def test_categorical_profile_keeps_the_top_k_and_an_other_share() -> None:
    values = ["de"] * 50 + ["fr"] * 30 + ["it"] * 30 + ["es"] * 5 + [None] * 7 + [np.nan] * 3
    p = categorical_profile("country", values, top_k=3)
    assert p.top == ("de", "fr", "it")  # by count, then by value
    assert p.counts == (50, 30, 30) and p.other == 5 and p.missing == 10
    assert not p.complete and p.bin_counts() == (50, 30, 30, 5)
    full = categorical_profile("country", values, top_k=50)
    assert full.complete and full.other == 0 and len(full.top) == 4
    flags = categorical_profile("first", [True, False, True, None], 50, boolean=True)
    assert flags.top == (True, False) and flags.counts == (2, 1) and flags.missing == 1


def test_profile_of_a_frame_and_an_array_and_round_trip() -> None:
    frame = pd.DataFrame({"amount": [1.0, 2.0, None, 4.0], "n": [1, 2, 3, 4],
                          "country": ["de", "fr", None, "de"],
                          "first": [True, False, True, True]})
    specs = (Feature("amount", missing=True), Feature("n", "integer"),
             Feature("country", "string", True), Feature("first", "boolean"))
    profile = profile_of(frame, specs, bins=4, top_k=5)
    assert [f.kind for f in profile.features] == ["numeric", "numeric", "categorical",
                                                  "categorical"]
    again = Profile.parse(orjson.loads(orjson.dumps(profile.to_dict())))
    assert again == profile
    array = profile_of(np.array([[1.0, 5.0], [2.0, 6.0]]), (Feature("a"), Feature("b")))
    assert array.features[1].min == 5.0 and array.features[0].rows == 2
    with pytest.raises(ValueError, match="bins"):
        profile_of(frame, specs, bins=1)
    with pytest.raises(ValueError, match="no rows"):
        profile_of(frame.iloc[:0], specs)


@pytest.mark.parametrize(("change", "problem"), [
    ({"edges": [2.0, 1.0], "counts": [1, 1, 1]}, "strictly increasing"),
    ({"counts": [1, 1]}, "counts"),
    ({"missing": 9}, "missing exceeds rows"),
    ({"kind": "other"}, "kind"),
    ({"min": None}, "'min' and 'max'"),
])
def test_a_bad_profile_is_refused_with_one_line(change: dict[str, Any], problem: str) -> None:
    good = {"name": "a", "kind": "numeric", "rows": 4, "missing": 1, "edges": [1.0, 2.0],
            "counts": [1, 1, 1], "min": 0.0, "max": 3.0}
    assert FeatureProfile.parse(good).counts == (1, 1, 1)
    with pytest.raises(ProfileError, match=problem):
        FeatureProfile.parse({**good, **change})


def test_write_bundle_stores_the_profile_and_a_bundle_without_one_loads(tmp_path: Path) -> None:
    x, _ = training_data(n=400)
    with_profile = load_bundle(save(tmp_path / "with", logistic(), reference=x))
    assert with_profile.manifest.profile == profile_of(x, with_profile.manifest.feature_specs)
    stored = orjson.loads((tmp_path / "with" / "model.json").read_bytes())
    assert [f["name"] for f in stored["profile"]["features"]] == ["a", "b", "c"]
    assert load_bundle(save(tmp_path / "without", logistic())).manifest.profile is None


def test_a_profile_of_other_features_is_refused(tmp_path: Path) -> None:
    other = profile_of(np.ones((3, 2)), (Feature("a"), Feature("z")))
    with pytest.raises(ValueError, match="differ from the model's"):
        save(tmp_path / "bad", logistic(), reference=other)
    folder = save(tmp_path / "good", logistic(), reference=training_data(n=50)[0])
    data = orjson.loads((folder / "model.json").read_bytes())
    data["profile"]["features"][0]["counts"][0] += 1
    (folder / "model.json").write_bytes(orjson.dumps(data))
    with pytest.raises(ModelLoadError, match="profile of 'a'"):
        load_bundle(folder)


def test_a_frame_pipeline_with_strings_and_missing_values_gets_its_profile(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"amount": rng.normal(50, 10, 300),
                          "country": rng.choice(["de", "fr", "it"], 300)})
    frame.loc[::7, "amount"] = np.nan
    y = (rng.random(300) < 0.3).astype(int)
    model = make_pipeline(ColumnTransformer([
        ("num", SimpleImputer(), ["amount"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["country"])]), LogisticRegression())
    model.fit(frame, y)
    bundle = load_bundle(write_bundle(tmp_path / "m", model, name="f", version="1",
                                      task="binary", sample=frame, reference=frame))
    amount, country = bundle.manifest.profile.features  # type: ignore[union-attr]
    assert amount.missing == int(frame["amount"].isna().sum()) and amount.rows == 300
    assert country.complete and sum(country.counts) == 300
