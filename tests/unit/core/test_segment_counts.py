"""Feature counts per segment value: each value's counts equal ``CountLayout.count`` of its
rows alone (itself a value-by-value recount, test_feature_counts.py), for typed columns and
the fast path's matrix; rows without a value are in no group."""

from __future__ import annotations

import math

import numpy as np

from tests.unit.core.test_feature_counts import SPECS, events, recount, reference
from worker.core.columns import build_columns
from worker.core.feature_counts import CountLayout
from worker.core.segment_counts import count_by_value
from worker.model.feature_types import Feature
from worker.model.profile import FeatureProfile, Profile, profile_of


def test_each_value_counts_as_a_recount_of_its_rows_alone() -> None:
    rng = np.random.default_rng(21)
    profile = reference(rng)
    layout = CountLayout.of(profile)
    rows = events(rng, 3_000, 3.0, ["de", "fr", "it", "zz"], null_share=0.2)
    markets = ["DE", "FR", "IT", None, "a-long-value", ""]
    keys = [markets[int(k)] for k in rng.integers(0, len(markets), len(rows))]
    columns, _ = build_columns(rows, SPECS)
    got = count_by_value(layout, columns, "market", keys)
    assert got.field == "market" and list(got.values) == sorted({k for k in keys if k is not None})
    for value, n, counts in zip(got.values, got.rows.tolist(), got.counts, strict=True):
        mine = [r for r, k in zip(rows, keys, strict=True) if k == value]
        assert n == len(mine)
        assert counts.tolist() == recount(profile, mine), value
    assert got.covers == sum(k is not None for k in keys)


def test_the_matrix_path_edges_infinities_and_nan_per_group() -> None:
    profile = Profile((
        FeatureProfile("a", "numeric", 4, 0, edges=(0.0, 1.0, 2.0), counts=(1, 1, 1, 1),
                       min=-1.0, max=3.0),
        FeatureProfile("b", "numeric", 2, 0, edges=(5.0,), counts=(1, 1)),
    ))
    layout = CountLayout.of(profile)
    values = [0.0, 1.0, 2.0, 5.0, -1.0, math.inf, -math.inf, math.nan, 3.0, 0.5]
    rng = np.random.default_rng(4)
    matrix = rng.choice(values, size=(700, 2))
    keys = [("x", "y", "z")[int(k)] for k in rng.integers(0, 3, 700)]
    got = count_by_value(layout, matrix, "g", keys)
    for value, counts in zip(got.values, got.counts, strict=True):
        mine = matrix[[k == value for k in keys]]
        assert counts.tolist() == layout.count(mine).tolist(), value
    assert (got.counts.sum(axis=0) == layout.count(matrix)).all()  # every row has a value


def test_no_value_no_group_and_one_group() -> None:
    specs = (Feature("a"), Feature("b"))
    layout = CountLayout.of(profile_of(np.random.default_rng(1).normal(size=(100, 2)), specs))
    matrix = np.random.default_rng(2).normal(size=(10, 2))
    empty = count_by_value(layout, matrix, "g", [None] * 10)
    assert empty.values == () and empty.counts.shape == (0, layout.size)
    one = count_by_value(layout, matrix, "g", ["v"] * 10)
    assert one.counts.tolist() == [layout.count(matrix).tolist()]


def test_past_the_limit_the_less_frequent_values_are_counted_together_as_other() -> None:
    specs = (Feature("a"),)
    layout = CountLayout.of(profile_of(np.random.default_rng(1).normal(size=(100, 1)), specs))
    matrix = np.random.default_rng(2).normal(size=(12, 1))
    keys = ["x"] * 5 + ["y"] * 4 + ["z", "w", "v"]
    got = count_by_value(layout, matrix, "g", keys, limit=2)
    assert got.values == ("x", "y", "__other__") and got.rows.tolist() == [5, 4, 3]
    assert got.counts[2].tolist() == layout.count(matrix[9:]).tolist()
    assert (got.counts.sum(axis=0) == layout.count(matrix)).all()
