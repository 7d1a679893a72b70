"""Exact sums: order-independent, canonical, JSON-safe."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import orjson
import pytest

from worker.monitor.exactsum import canonical, merge_sums, parse_sum, value


def test_exact_sums_do_not_depend_on_order_or_split() -> None:
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(3000) * 10.0 ** rng.integers(-20, 20, 3000)).tolist()
    values += [1e16, 1.0, -1e16, 1e-300]
    exact = sum(map(Fraction, values), Fraction(0))
    whole = canonical(values)
    assert value(whole) == float(exact) == math.fsum(values)
    assert sum(map(Fraction, whole), Fraction(0)) == exact  # nothing lost
    for _ in range(5):
        order = rng.permutation(len(values))
        cuts = sorted(rng.choice(len(values), 4, replace=False).tolist())
        parts = [canonical(values[i] for i in chunk) for chunk in np.split(order, cuts)]
        merged = parts[0]
        for part in parts[1:]:
            merged = merge_sums(part, merged)
        assert merged == whole


def test_canonical_form_and_json() -> None:
    assert canonical([]) == () == canonical([1.0, -1.0]) and value(()) == 0.0
    s = canonical([1.0, 1e-20, 1e-40])
    assert s == (1.0, 1e-20, 1e-40)
    assert parse_sum(orjson.loads(orjson.dumps(list(s))), "x") == s
    assert parse_sum([1e-20, 1.0, 1e-40], "x") == s  # re-canonicalised
    with pytest.raises(ValueError):
        parse_sum(["1"], "x")
    with pytest.raises(ValueError):
        parse_sum([math.inf], "x")
