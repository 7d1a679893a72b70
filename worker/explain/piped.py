"""Reasons of a Pipeline whose last step is a tree model (preprocessing, then a forest or a
boosted ensemble): explained by the last step's own explainer in the space it was fit on,
the preprocessing's output, then each column's contribution summed into the input feature
the column comes from (owners.py): the one-hot columns of ``country`` into ``country``, a
scaled or imputed column into its feature, an imputer's missing-value indicator into the
feature it flags.

Exact: a sum of exact contributions is exact, and the baseline is the last step's own. A
step whose outputs mix inputs (PCA, PolynomialFeatures) has no such mapping: the pipeline
is refused in one line naming the step. With reference rows in the bundle, the mapping is
held against the preprocessing itself (``owners.check_owners``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.explain import Contributions, Explainer, ExplainError, FloatArray, Output
from worker.explain.owners import check_owners, owners
from worker.model.bundle import ModelBundle


@dataclass(frozen=True, slots=True)
class PipelineExplainer:
    output: Output
    #: The pipeline's steps before the last.
    transform: Any
    inner: Explainer
    #: (columns, features): 1 where the column belongs to the feature.
    member: FloatArray

    def contributions(self, matrix: Any) -> Contributions:
        z = self.transform.transform(matrix)
        z = z.toarray() if hasattr(z, "toarray") else z
        c = self.inner.contributions(np.asarray(z, dtype=np.float64))
        return Contributions(c.baseline, c.values @ self.member)


def build(bundle: ModelBundle) -> PipelineExplainer:
    from worker.explain import tree_explainer
    from worker.explain.linear import reference_rows

    model = bundle.estimator
    transform, last = model[:-1], model[-1]
    inner = tree_explainer(last, bundle.task, bundle.positive_index)
    if inner is None:
        raise ExplainError(f"--explain: no explainer for a Pipeline ending in "
                           f"{type(last).__name__} (linear models, tree ensembles, LightGBM "
                           "and XGBoost only)")
    n_in = len(bundle.features)
    found = owners(transform, n_in)
    width = getattr(last, "n_features_in_", len(found))
    if width != len(found):
        raise ExplainError(f"--explain: the pipeline's last step takes {width} columns where "
                           f"its preprocessing's structure gives {len(found)}")
    rows = reference_rows(bundle)
    if rows is not None:
        check_owners(transform.transform, rows, found)
    member = np.zeros((len(found), n_in))
    member[np.arange(len(found)), found] = 1.0
    return PipelineExplainer(inner.output, transform, inner, member)
