"""The arithmetic of the figures (catalog.py says which figure uses which), equal to
sklearn.metrics on the same events.

Undefined figures are None rather than 0: precision without predicted
positives, recall without true positives, f1 when tp + fp + fn == 0 (exactly
where sklearn would raise UndefinedMetricWarning with ``zero_division="warn"``),
ROC AUC with one class only, PSI without a reference histogram.

log_loss is defined with one class too (it is sklearn's value with
``labels=[negative, positive]``). MAPE averages over non-zero true values only
(sklearn's formula on that subset).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from worker.monitor import exactsum
from worker.monitor.aggregate import WindowAgg

Figure = int | float | None
PSI_EPSILON: Final = 1e-4


def ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def mean(agg: WindowAgg, name: str, count: str = "count") -> float | None:
    """The exact sum ``name`` over the counter ``count``, correctly rounded."""
    n = agg.counts.get(count, 0)
    return exactsum.value(agg.sums.get(name, ())) / n if n else None


def roc_auc(pos: Mapping[int, int], neg: Mapping[int, int]) -> float | None:
    """Mann-Whitney AUC over binned scores; a positive and a negative in the same bin
    count as a tie (1/2). Kept in integers (twice the numerator) until the division."""
    n_pos, n_neg = sum(pos.values()), sum(neg.values())
    if not n_pos or not n_neg:
        return None
    below = twice = 0
    for key in sorted(pos.keys() | neg.keys()):
        p, q = pos.get(key, 0), neg.get(key, 0)
        twice += p * (2 * below + q)
        below += q
    return twice / (2 * n_pos * n_neg)


def psi(actual: Mapping[int, int], expected: Sequence[float]) -> float | None:
    """Population stability index, sum of (a_i - e_i) * ln(a_i / e_i) over the
    reference bins, a and e being proportions of this window and of the reference.

    A bin empty on either side would make the term infinite, so its proportion is
    taken as PSI_EPSILON (1e-4) instead; the other proportions are left as they are.
    """
    n_actual, n_expected = sum(actual.values()), math.fsum(expected)
    if not n_actual or n_expected <= 0:
        return None
    terms = []
    for i, count in enumerate(expected):
        a = actual.get(i, 0) / n_actual or PSI_EPSILON
        e = count / n_expected or PSI_EPSILON
        terms.append((a - e) * math.log(a / e))
    return math.fsum(terms)
