"""Exact reasons of a linear model, or of a Pipeline whose last step is linear.

With z the row in the last step's input space (the preprocessing's output), coef its
coefficients and m the mean of z over the reference rows, the model's log-odds (binary) or
value (regression) is ``intercept + coef . z = baseline + sum_k coef_k (z_k - m_k)`` with
``baseline = intercept + coef . m``. Each column's term is summed into the input feature
that column comes from (owners.py), so the contributions of a feature are exact and add up
to the score's log-odds. Vectorised: one matrix product per batch.

The reference rows are the bundle's self-test rows (holdout rows write_bundle keeps, up to
64): the reference profile holds bins, not means, and a mean in the transformed space needs
rows. A bundle without them takes m = 0 (baseline = the intercept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.core.features import estimator_input, extractor
from worker.explain import Contributions, ExplainError, FloatArray, Output
from worker.explain.owners import check_owners, owners
from worker.model.bundle import ModelBundle

#: How far expit(intercept + coef . z) may be from the model's own probability.
TOLERANCE = 1e-9


def is_linear(model: Any) -> bool:
    last = model.steps[-1][1] if type(model).__name__ == "Pipeline" else model
    return hasattr(last, "coef_") and hasattr(last, "intercept_")


@dataclass(frozen=True, slots=True)
class LinearExplainer:
    output: Output
    #: The preprocessing (a Pipeline's steps before the last); None: the model is bare.
    transform: Any
    #: (columns, features): coef where the column belongs to the feature, else 0.
    weights: FloatArray
    #: coef . m summed per feature: what is taken off each row's products.
    offset: FloatArray
    base: float
    #: Each column is its own feature (a bare model): an elementwise product suffices.
    diagonal: bool

    def contributions(self, matrix: Any) -> Contributions:
        z = matrix if self.transform is None else self.transform.transform(matrix)
        if self.diagonal:
            values = np.asarray(z, dtype=np.float64) * np.diagonal(self.weights) - self.offset
        else:
            values = np.asarray(z @ self.weights, dtype=np.float64) - self.offset
        return Contributions(np.full(values.shape[0], self.base), values)


def build(bundle: ModelBundle) -> LinearExplainer:
    model = bundle.estimator
    piped = type(model).__name__ == "Pipeline"
    transform, last = (model[:-1], model[-1]) if piped else (None, model)
    coef = np.asarray(last.coef_, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] != 1:
        raise ExplainError("--explain: a linear model with more than one row of "
                           "coefficients is not explained")
    coef = coef.reshape(-1)
    intercept = float(np.ravel(np.asarray(last.intercept_, dtype=np.float64))[0])
    n_in = len(bundle.features)
    rows = reference_rows(bundle)
    found = list(range(n_in)) if transform is None else owners(transform, n_in)
    if len(found) != coef.size:
        raise ExplainError(f"--explain: the model has {coef.size} coefficients for "
                           f"{len(found)} columns of its preprocessing")
    mean = np.zeros(coef.size)
    if rows is not None:
        if transform is not None:
            check_owners(transform.transform, rows, found)
        z = rows if transform is None else transform.transform(rows)
        z = np.asarray(z.toarray() if hasattr(z, "toarray") else z, dtype=np.float64)
        _check_linear(bundle, rows, z @ coef + intercept)
        mean = z.mean(axis=0)
    member = np.zeros((coef.size, n_in))
    member[np.arange(coef.size), found] = 1.0
    weights = coef[:, None] * member
    output = Output.RAW if bundle.task == "regression" else Output.LOG_ODDS
    return LinearExplainer(output, transform, weights, (mean * coef) @ member,
                           intercept + float(mean @ coef),
                           transform is None and found == list(range(n_in)))


def reference_rows(bundle: ModelBundle) -> Any:
    """The bundle's self-test rows as its runtime's input (None: the bundle has none)."""
    test = bundle.manifest.self_test
    if test is None:
        return None
    extract = extractor(bundle.manifest.feature_specs, estimator_input(bundle.runtime))
    batch = extract(list(test.events), False)
    return batch.matrix if batch.matrix.shape[0] else None


def _check_linear(bundle: ModelBundle, rows: Any, linear: FloatArray) -> None:
    """The model's own output is the linear score (regression) or its logistic function."""
    own = np.asarray(bundle.runtime.predict(rows), dtype=np.float64)
    if bundle.task == "regression":
        expected = linear
        own = own.reshape(-1)
    else:
        expected = 1.0 / (1.0 + np.exp(-linear))
        own = own[:, 1]
    if not np.allclose(own, expected, rtol=0.0, atol=TOLERANCE):
        raise ExplainError("--explain: the model's output is not the logistic function of "
                           "its linear score (or that score itself), so its reasons would "
                           "not add up")
