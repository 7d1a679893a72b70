"""Exact float sums that merge in any order to bit-identical results.

A plain running float sum depends on the order of additions, so two monitor
instances that saw the same events split differently would publish figures that
differ in the last digits. Instead a sum is kept as a short tuple of floats
whose exact (real) total is the exact sum of every value added. Its value, the
first entry, is the correctly rounded total, which is the same however the
values were split or ordered.

The stored form is canonical, the greedy expansion (the rounded total, then the
rounded remainder, ...), so equal sums are equal tuples; it is usually one to
three floats long and every entry is finite, hence valid JSON. ``math.fsum``
(exact, correctly rounded, in C) does all the work: appending ``-head`` to the
values leaves their exact remainder, whose rounding is the next entry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

ExactSum = tuple[float, ...]
"""Canonical exact sum; the empty tuple is zero."""


def canonical(values: Iterable[float]) -> ExactSum:
    """The unique greedy expansion of the exact total of ``values``."""
    rest = [x for x in values if x]
    out: list[float] = []
    while rest:
        head = math.fsum(rest)
        if head == 0.0:
            break
        out.append(head)
        rest.append(-head)
    return tuple(out)


def merge_sums(a: ExactSum, b: ExactSum) -> ExactSum:
    if not a:
        return b
    if not b:
        return a
    return canonical((*a, *b))


def value(s: ExactSum) -> float:
    """The correctly rounded total (the first entry of the canonical form)."""
    return s[0] if s else 0.0


def parse_sum(data: object, what: str) -> ExactSum:
    numbers = [_finite(x) for x in data] if isinstance(data, list | tuple) else [None]
    if any(x is None for x in numbers):
        raise ValueError(f"{what} must be a list of finite numbers")
    # Canonicalised again so that a hand-written or legacy value still compares equal.
    return canonical(x for x in numbers if x is not None)


def _finite(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)
