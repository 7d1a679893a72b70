"""Typed features: the manifest's feature list, typed columns with a precise reason for
every bad value, the runtime input chosen once per bundle, and types inferred from data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from worker.core.columns import build_columns
from worker.core.decoders.csv import CsvDecoder
from worker.core.features import extract_typed, extractor
from worker.errors import RejectKind
from worker.model.feature_types import Feature, FeatureSpecError, parse_features, plain_numbers
from worker.model.infer import infer_features, strict_categories

SPECS = (Feature("country", "string"), Feature("amount"), Feature("items", "integer"),
         Feature("first", "boolean"), Feature("risk", "number", missing=True),
         Feature("channel", "string", missing=True))


def good(i: int = 0, **changes: Any) -> dict[str, Any]:
    event = {"id": f"e{i}", "country": "de", "amount": 1.5, "items": 3, "first": False,
             "risk": 0.25, "channel": "web"}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def test_old_manifests_read_as_numbers_and_objects_are_checked() -> None:
    assert parse_features(["a", "b"]) == (Feature("a"), Feature("b"))
    assert plain_numbers(parse_features(["a", "b"]))
    typed = parse_features([{"name": "c", "type": "string", "missing": True,
                             "categories": ["x", "y"]}])
    assert typed == (Feature("c", "string", True, ("x", "y")),)
    for bad, fragment in [([{"name": "c", "type": "text"}], "unknown type 'text'"),
                          ([{"name": "c", "missing": "yes"}], "'missing' must be true"),
                          ([{"name": "c", "colour": 1}], "unknown keys ['colour']"),
                          ([{"name": "c", "categories": ["x"]}], "only string and integer"),
                          (["a", {"name": "a"}], "duplicate features: a")]:
        with pytest.raises(FeatureSpecError, match=fragment.replace("[", r"\[")):
            parse_features(bad)


def test_columns_are_typed_and_missing_values_become_nan() -> None:
    records = [good(0), good(1, risk=None, channel=...), good(2, items=4.0, first=True)]
    columns, problems = build_columns(records, SPECS)
    assert problems == {}
    country, amount, items, first, risk, channel = columns.arrays
    assert country.dtype == object and country.tolist() == ["de", "de", "de"]
    assert amount.dtype == np.float64 and items.dtype == np.int64 and items.tolist() == [3, 3, 4]
    assert first.dtype == np.bool_ and first.tolist() == [False, False, True]
    assert np.isnan(risk[1]) and risk.dtype == np.float64
    assert channel[1] != channel[1]  # NaN, as pandas holds a missing string


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": "1.5"}, "feature 'amount' must be a finite number, got str '1.5'"),
        ({"amount": True}, "feature 'amount' must be a finite number, got bool"),
        ({"amount": float("inf")}, "feature 'amount' must be a finite number, got inf"),
        ({"amount": 10**400}, "feature 'amount' must be a finite number, got an out-of-range int"),
        ({"items": 2.5}, "feature 'items' must be an integer, got float 2.5"),
        ({"items": 2**64}, "feature 'items' must be an integer, got int 18446744073709551616"),
        ({"items": True}, "feature 'items' must be an integer, got bool"),
        ({"first": 1}, "feature 'first' must be true or false, got int 1"),
        ({"country": 5}, "feature 'country' must be a string, got int 5"),
        ({"country": ""}, "feature 'country' must be a non-empty string"),
        ({"country": ...}, "feature 'country' is missing"),
        ({"country": None}, "feature 'country' is missing"),
        ({"country": ["de"]}, "feature 'country' must be a string, got list"),
    ],
)
def test_each_bad_value_rejects_its_record_naming_the_feature(
    changes: dict[str, Any], message: str
) -> None:
    batch = extract_typed([good(0), good(1, **changes), good(2)], SPECS, "frame")
    assert batch.valid == [0, 2]
    [(index, rejection)] = batch.rejected
    assert (index, rejection.kind, rejection.message) == (1, RejectKind.FEATURES, message)
    assert list(batch.matrix["country"]) == ["de", "de"]


def test_problems_of_one_record_are_listed_together_and_capped() -> None:
    batch = extract_typed([good(0, amount="x", items="y", first="z", country=1)], SPECS, "frame")
    message = batch.rejected[0][1].message
    assert message.startswith("feature 'country' must be a string, got int 1; feature 'amount'")
    assert message.endswith("; and 1 more")


def test_unseen_categories_are_refused_when_the_model_lists_them() -> None:
    specs = (Feature("country", "string", categories=("de", "fr")),)
    batch = extract_typed([{"id": "a", "country": "fr"}, {"id": "b", "country": "us"}], specs,
                          "columns")
    assert batch.valid == [0]
    assert batch.rejected[0][1].message == "feature 'country' has an unseen category str 'us'"


def test_the_runtime_input_is_chosen_once_per_bundle() -> None:
    plain = extractor((Feature("a"), Feature("b")), "float64")
    typed = extractor(SPECS[1:3], "float64")
    records: list[object] = [{"id": "x", "a": 1, "b": 2.5, "amount": 1.0, "items": 2}]
    assert plain(records, False).matrix.tolist() == [[1.0, 2.5]]
    assert typed(records, False).matrix.dtype == np.float64
    strings = extractor(SPECS[:2], "object")([good()], False).matrix
    assert strings.dtype == object and strings.tolist() == [["de", 1.5]]
    with pytest.raises(ValueError, match="unknown runtime input"):
        extractor(SPECS, "tensor")


def test_types_are_inferred_from_a_frame_and_strict_encoders_give_categories() -> None:
    df = pd.DataFrame({"country": ["de", "fr", None, "de"], "amount": [1.0, np.nan, 2.0, 3.0],
                       "items": [1, 2, 3, 4], "first": [True, False, True, False]})
    model = Pipeline([("columns", ColumnTransformer([
        ("c", OneHotEncoder(handle_unknown="error"), ["items"]),
        ("p", "passthrough", ["first"])])), ("lr", LogisticRegression())])
    model.fit(df, [0, 1, 0, 1])
    specs = infer_features(model, df, None)
    assert specs == (Feature("country", "string", True), Feature("amount", "number", True),
                     Feature("items", "integer", False, (1, 2, 3, 4)),
                     Feature("first", "boolean"))
    assert strict_categories(model, list(df.columns)) == {"items": [1, 2, 3, 4]}
    with pytest.raises(ValueError, match="fitted on an array: give features"):
        infer_features(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), np.zeros((2, 1)), None)


def test_csv_keeps_string_features_as_text_and_reads_booleans() -> None:
    decoder = CsvDecoder(["id", "country", "first", "amount"],
                         {"country": "string", "first": "boolean", "amount": "number"})
    [event] = decoder.decode([b"7,007,true,1.5"], 1000).events
    assert event == {"id": "7", "country": "007", "first": True, "amount": 1.5}
