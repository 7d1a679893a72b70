"""worker.core.features: the matrix, and a precise rejection for every bad record."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from tests.unit.helpers import FEATURES, event, without
from worker.core.features import extract
from worker.errors import Rejection, RejectKind


def test_well_formed_records_become_one_contiguous_float64_matrix() -> None:
    records: list[object] = [event(i) for i in range(5)]
    batch = extract(records, FEATURES)
    assert batch.valid == [0, 1, 2, 3, 4]
    assert batch.rejected == []
    assert batch.matrix.dtype == np.float64
    assert batch.matrix.flags.c_contiguous
    expected = [[0.5 * i, -1.25, 3.0] for i in range(5)]
    np.testing.assert_array_equal(batch.matrix, np.array(expected))


def test_feature_order_is_the_models_not_the_events() -> None:
    batch = extract([{"id": "x", "c": 3, "a": 1, "b": 2}], ("c", "b", "a"))
    np.testing.assert_array_equal(batch.matrix, [[3.0, 2.0, 1.0]])


def test_single_feature_and_large_ints() -> None:
    batch = extract([{"id": "x", "a": 2**62}, {"id": "y", "a": -3}], ("a",))
    np.testing.assert_array_equal(batch.matrix, [[float(2**62)], [-3.0]])


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("1.5", "str"),  # np.array would silently convert this one
        (True, "bool"),  # and this one
        (None, "null"),
        ([1.0], "list"),
        ({"v": 1}, "dict"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (10**400, "an out-of-range int"),
    ],
)
def test_a_bad_value_rejects_its_record_only(value: Any, got: str) -> None:
    records: list[object] = [event(0), event(1, b=value), event(2)]
    batch = extract(records, FEATURES)
    assert batch.valid == [0, 2]
    assert batch.rejected == [
        (1, Rejection(RejectKind.FEATURES, f"feature 'b' must be a finite number, got {got}"))
    ]
    np.testing.assert_array_equal(batch.matrix[:, 1], [-1.25, -1.25])


def test_huge_json_number_decodes_to_a_float_that_is_still_finite_checked() -> None:
    # orjson refuses 1e999 outright, but 1e308 * 10 built in Python is inf.
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b'{"a": 1e999}')
    batch = extract([event(0, a=1e308 * 10)], FEATURES)
    assert batch.rejected[0][1].message == "feature 'a' must be a finite number, got inf"


def test_missing_features_are_named_and_problems_are_capped() -> None:
    batch = extract([without(event(0), "a")], FEATURES)
    assert batch.rejected == [(0, Rejection(RejectKind.FEATURES, "feature 'a' is missing"))]
    names = [f"f{i}" for i in range(6)]
    batch = extract([{"id": "x", "f0": "s"}], names)
    message = batch.rejected[0][1].message
    assert message.startswith("feature 'f0' must be a finite number, got str; feature 'f1' is")
    assert message.endswith("; and 3 more")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "event must be a JSON object"),
        ("text", "event must be a JSON object"),
        (None, "event must be a JSON object"),
        (without(event(0), "id"), "event needs a string 'id'"),
        (event(0, id=17), "event needs a string 'id'"),
        (event(0, id=""), "event needs a string 'id'"),
        (event(0, id=None), "event needs a string 'id'"),
    ],
)
def test_shape_problems_are_schema_rejections(record: object, message: str) -> None:
    batch = extract([record], FEATURES)
    assert batch.valid == []
    assert batch.matrix.shape == (0, 3)
    assert batch.rejected == [(0, Rejection(RejectKind.SCHEMA, message))]


def test_id_is_optional_when_not_required() -> None:
    batch = extract([{"a": 1, "b": 2, "c": 3}], FEATURES, require_id=False)
    assert batch.valid == [0]


def test_mixed_batch_keeps_order_and_accounts_for_every_record() -> None:
    records: list[object] = [
        event(0),
        "junk",
        event(2, a="x"),
        event(3),
        event(4, c=float("nan")),
        without(event(5), "id"),
        event(6),
    ]
    batch = extract(records, FEATURES)
    assert batch.valid == [0, 3, 6]
    assert [i for i, _ in batch.rejected] == [1, 2, 4, 5]
    assert [r.kind for _, r in batch.rejected] == [
        RejectKind.SCHEMA, RejectKind.FEATURES, RejectKind.FEATURES, RejectKind.SCHEMA,
    ]
    np.testing.assert_array_equal(batch.matrix[:, 0], [0.0, 1.5, 3.0])
    assert batch.matrix.flags.c_contiguous


def test_empty_input_and_empty_feature_list() -> None:
    assert extract([], FEATURES).matrix.shape == (0, 3)
    with pytest.raises(ValueError, match="feature_names"):
        extract([event(0)], ())
