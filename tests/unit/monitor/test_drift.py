"""PSI and Jensen-Shannon distance on exact counts, equal to a reference computation to
1e-9 (PSI: the definition term by term, and the score PSI's own function; JS: scipy),
and the per-feature figures from a feature's slice of the counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from worker.core.columns import Columns
from worker.core.feature_counts import CountLayout
from worker.model.feature_types import Feature
from worker.model.profile import Profile, categorical_profile, numeric_profile
from worker.monitor import figures
from worker.monitor.drift import PSI_EPSILON, feature_figures, js_distance, psi, ranked


def reference_psi(actual: list[int], expected: list[int]) -> float:
    total_a, total_e = sum(actual), sum(expected)
    out = 0.0
    for a_count, e_count in zip(actual, expected, strict=True):
        a = a_count / total_a if a_count else PSI_EPSILON
        e = e_count / total_e if e_count else PSI_EPSILON
        out += (a - e) * math.log(a / e)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_psi_and_js_equal_the_reference_to_1e9(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bins = int(rng.integers(2, 60))
    expected = rng.integers(0, 5_000, bins).tolist()
    actual = (rng.integers(0, 3_000, bins) * (rng.random(bins) < 0.8)).tolist()
    expected[0] += 1
    actual[-1] += 1
    got = psi(actual, expected)
    assert got == pytest.approx(reference_psi(actual, expected), abs=1e-9)
    assert got == pytest.approx(figures.psi(dict(enumerate(actual)), expected), abs=1e-9)
    assert js_distance(actual, expected) == pytest.approx(
        float(jensenshannon(actual, expected, base=2)), abs=1e-9)


def test_edge_cases() -> None:
    assert psi([5, 5], [10, 10]) == 0.0 and js_distance([5, 5], [10, 10]) == 0.0
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0, abs=1e-12)
    assert psi([0, 0], [1, 1]) is None and js_distance([1, 1], [0, 0]) is None
    with pytest.raises(ValueError, match="3 bins against a reference of 2"):
        psi([1, 2, 3], [1, 2])


def test_numeric_feature_figures() -> None:
    rng = np.random.default_rng(4)
    p = numeric_profile("amount", rng.normal(0, 1, 5_000), bins=10)
    layout = CountLayout.of(Profile((p,)))
    live = np.concatenate([rng.normal(3, 1, 900), [np.nan] * 100])
    counts = layout.count(Columns((Feature("amount", missing=True),), (live,), live.size))
    f = feature_figures(p, counts)
    bins = counts[:10].tolist()
    assert f.count == 1_000 and f.missing_rate == 0.1
    assert f.out_of_range_rate == int((live > p.max).sum() + (live < p.min).sum()) / 1_000
    assert f.psi == pytest.approx(reference_psi(bins, list(p.counts)), abs=1e-9)
    assert f.js == pytest.approx(float(jensenshannon(bins, p.counts, base=2)), abs=1e-9)
    assert f.unseen_rate is None and f.psi is not None and f.psi > 1.0


def test_categorical_feature_figures_and_ranking() -> None:
    p = categorical_profile("country", ["de"] * 60 + ["fr"] * 40, top_k=50)
    layout = CountLayout.of(Profile((p,)))
    live = np.array(["de"] * 50 + ["xx"] * 30 + [None] * 20, dtype=object)
    counts = layout.count(Columns((Feature("country", "string", True),), (live,), 100))
    f = feature_figures(p, counts)
    assert (f.count, f.missing_rate, f.unseen_rate, f.out_of_range_rate) == (100, 0.2, 0.3, None)
    assert f.psi == pytest.approx(reference_psi([50, 0, 30], [60, 40, 0]), abs=1e-9)
    partial = categorical_profile("country", ["de"] * 60 + ["fr"] * 40, top_k=1)
    assert feature_figures(partial, [50, 30, 20]).unseen_rate is None  # cannot be told
    calm = feature_figures(p, [60, 40, 0, 0])
    assert [g.name for g in ranked([calm, f])] == ["country", "country"]
    assert ranked([calm, f])[0] is f and calm.psi == 0.0
