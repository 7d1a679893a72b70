"""Live feature counts: every slot equals a recount of the values one by one (bins by
counting the edges at or below a value, missing, out of range, other/unseen), batches
merge by addition, and the float64 fast path's matrix counts as its columns do."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from worker.core.columns import Columns, build_columns
from worker.core.feature_counts import CountLayout
from worker.model.feature_types import Feature
from worker.model.profile import FeatureProfile, Profile, profile_of

SPECS = (Feature("amount", missing=True), Feature("items", "integer"),
         Feature("country", "string", missing=True), Feature("first", "boolean"),
         Feature("promo", "boolean", missing=True))
COUNTRIES = ["de", "fr", "it", "es", "nl"]


def events(rng: np.random.Generator, n: int, shift: float = 1.0,
           countries: list[str] = COUNTRIES, null_share: float = 0.1,
           ) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        nulls = rng.random(3) < null_share
        out.append({
            "id": f"e{i}",
            "amount": None if nulls[0] else float(rng.lognormal(3.0, 1.0) * shift),
            "items": int(rng.integers(0, 12 if shift == 1.0 else 30)),
            "country": None if nulls[1] else str(rng.choice(countries)),
            "first": bool(rng.random() < 0.3),
            "promo": None if nulls[2] else bool(rng.random() < 0.5),
        })
    return out


def reference(rng: np.random.Generator, top_k: int = 50) -> Profile:
    rows = events(rng, 3_000)
    frame = np.array([[r[f.name] for f in SPECS] for r in rows], dtype=object)
    return profile_of(frame, SPECS, bins=10, top_k=top_k)


def recount(profile: Profile, rows: list[dict[str, Any]]) -> list[int]:
    """The expected vector, value by value, without numpy's searchsorted or bincount."""
    out: list[int] = []
    for p in profile.features:
        values = [r.get(p.name) for r in rows]
        missing = sum(v is None for v in values)
        present = [v for v in values if v is not None]
        if p.kind == "numeric":
            bins = [0] * len(p.counts)
            for v in present:
                bins[sum(e <= v for e in p.edges)] += 1
            below = sum(p.min is not None and v < p.min for v in present)
            above = sum(p.max is not None and v > p.max for v in present)
            out += [*bins, missing, below, above]
        else:
            tops = [sum(v == t and type(v) is type(t) for v in present) for t in p.top]
            out += [*tops, len(present) - sum(tops), missing]
    return out


def test_every_slot_equals_a_recount_value_by_value() -> None:
    rng = np.random.default_rng(7)
    profile = reference(rng)
    layout = CountLayout.of(profile)
    for shift, countries in ((1.0, COUNTRIES), (10.0, [*COUNTRIES, "xx", "yy"])):
        rows = events(rng, 2_000, shift, countries, null_share=0.3)
        columns, problems = build_columns(rows, SPECS)
        assert not problems
        counts = layout.count(columns)
        assert counts.tolist() == recount(profile, rows)
        assert counts.sum() == len(rows) * len(SPECS) + _out_of_range(layout, counts)


def _out_of_range(layout: CountLayout, counts: np.ndarray) -> int:
    """Below and above are counted in a bin too: the one double-counted tail."""
    return sum(int(counts[s.stop - 2] + counts[s.stop - 1]) for s in layout.features if s.numeric)


def test_counts_merge_by_addition_and_unseen_values_land_in_other() -> None:
    rng = np.random.default_rng(8)
    profile = reference(rng)
    layout = CountLayout.of(profile)
    rows = events(rng, 900, countries=[*COUNTRIES, "new"])
    whole = layout.count(build_columns(rows, SPECS)[0])
    parts = [layout.count(build_columns(rows[a : a + 300], SPECS)[0]) for a in (0, 300, 600)]
    assert (sum(parts) == whole).all()  # type: ignore[union-attr]
    country = layout.features[2]
    assert profile.features[2].complete
    other = int(whole[country.stop - 2])
    assert other == sum(r["country"] == "new" for r in rows) > 0


def test_missing_values_of_any_kind_are_missing() -> None:
    profile = Profile((FeatureProfile("c", "categorical", 3, 0, counts=(2, 1), top=("a", "b")),))
    layout = CountLayout.of(profile)
    column = np.array(["a", None, math.nan, float("nan"), np.nan, "b", "z"], dtype=object)
    counts = layout.count(Columns((Feature("c", "string", True),), (column,), len(column)))
    assert counts.tolist() == [1, 1, 1, 4]  # a, b, other (z), missing


def test_the_fast_path_matrix_counts_as_its_columns() -> None:
    rng = np.random.default_rng(9)
    specs = (Feature("a"), Feature("b"), Feature("c"))
    train = rng.normal(size=(2_000, 3))
    layout = CountLayout.of(profile_of(train, specs, bins=20))
    live = rng.normal(0.5, 2.0, size=(1_000, 3))
    columns = Columns(specs, tuple(live[:, k].copy() for k in range(3)), 1_000)
    assert (layout.count(live) == layout.count(columns)).all()
    with pytest.raises(ValueError, match="2 columns for 3 features"):
        layout.count(live[:, :2])
    assert layout.count(np.empty((0, 3))).sum() == 0


def test_integers_without_missing_and_booleans_without_missing() -> None:
    specs = (Feature("n", "integer"), Feature("f", "boolean"))
    profile = profile_of(np.array([[1, True], [2, False], [3, True]], dtype=object), specs, bins=3)
    layout = CountLayout.of(profile)
    columns, _ = build_columns([{"id": "x", "n": 5, "f": False}, {"id": "y", "n": 0, "f": True}],
                               specs)
    assert columns.arrays[0].dtype == np.int64 and columns.arrays[1].dtype == np.bool_
    counts = layout.count(columns).tolist()
    n, f = layout.features
    assert counts[n.start : n.stop] == [1, 0, 1, 0, 1, 1]  # bins 0, 2; below 1, above 1
    assert counts[f.start : f.stop] == [1, 1, 0, 0]  # True, False, other, missing


def test_values_on_edges_infinities_and_unequal_bin_counts_count_as_one_by_one() -> None:
    """The block counts by comparing with each edge column (NaN-padded where a feature
    has fewer bins): values exactly on an edge, +-inf, NaN and a feature without a
    range must land where the value-by-value rule puts them."""
    profile = Profile((
        FeatureProfile("a", "numeric", 4, 0, edges=(0.0, 1.0, 2.0), counts=(1, 1, 1, 1),
                       min=-1.0, max=3.0),
        FeatureProfile("b", "numeric", 2, 0, edges=(5.0,), counts=(1, 1)),
        FeatureProfile("c", "numeric", 6, 0, edges=(-2.0, -1.0, 0.0, 1.0, 2.0),
                       counts=(1,) * 6, min=-3.0, max=3.0),
    ))
    layout = CountLayout.of(profile)
    values = [0.0, 1.0, 2.0, 5.0, -1.0, -0.0, math.inf, -math.inf, math.nan, 3.0, -3.0, 0.5]
    rng = np.random.default_rng(3)
    matrix = np.array([[values[int(k)] for k in rng.integers(0, len(values), 3)]
                       for _ in range(500)], dtype=np.float64)
    rows = [{p.name: (None if math.isnan(v) else v) for p, v in zip(profile.features, row,
                                                                      strict=True)}
            for row in matrix.tolist()]
    assert layout.count(matrix).tolist() == recount(profile, rows)
