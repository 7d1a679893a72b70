"""The load-time check of an explainer: on the bundle's reference rows (its self-test rows),
baseline + contributions equals the model's own output, as its ``Output`` says: the
probability itself, its log-odds (compared through the logistic function, so a booster's
float32 probability costs no precision), or the value. A model whose output is something
else (a LightGBM regressor with a log link, an XGBoost objective other than logistic or
squared error) is refused in one line rather than given reasons that do not add up.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from worker.explain import Contributions, Explainer, ExplainError, Output
from worker.model.bundle import ModelBundle

#: How far the sum may be from the model's own output (absolute, and relative for values).
TOLERANCE: Final = 1e-6


def adds_up(bundle: ModelBundle, explainer: Explainer) -> None:
    """ExplainError when the contributions do not add up on the reference rows (none: no
    check, as a bundle without self-test rows has nothing to check on)."""
    from worker.explain.linear import reference_rows

    rows = reference_rows(bundle)
    if rows is None:
        return
    c: Contributions = explainer.contributions(rows)
    total = c.baseline + c.values.sum(axis=1)
    own: Any = np.asarray(bundle.runtime.predict(rows), dtype=np.float64)
    if explainer.output is Output.RAW:
        expected, got = own.reshape(-1), total
    else:
        expected = own[:, 1]
        got = total if explainer.output is Output.PROBABILITY else 1.0 / (1.0 + np.exp(-total))
    off = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    if not np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE):
        kind = type(bundle.estimator).__name__
        raise ExplainError(f"--explain: the contributions of this {kind} do not add up to "
                           f"its output ({explainer.output}) on the bundle's reference rows "
                           f"(off by {off:.3g}); its objective or link is not explained")
