"""Which input feature each column of a fitted scikit-learn transformer's output comes
from: the bookkeeping that sums a linear model's per-column contributions back into the
features an event names (the one-hot columns of ``country`` into ``country``).

Read from the fitted transformers' own structure (a ColumnTransformer's column lists, a
OneHotEncoder's categories, a SimpleImputer's kept columns and indicators), never from
column names. A transformer whose outputs may mix inputs (PolynomialFeatures, PCA, a
Normalizer) has no such owners: ExplainError names it. ``check_owners`` then holds the
answer against the transformer itself on sample rows. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from worker.explain import ExplainError

#: Transformers whose output column i depends on input column i alone. FunctionTransformer
#: is taken as elementwise (np.log1p); check_owners catches one that is not on its rows.
ONE_TO_ONE: Final = frozenset({
    "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "QuantileTransformer",
    "PowerTransformer", "OrdinalEncoder", "FunctionTransformer", "Binarizer",
})


def owners(step: Any, n_inputs: int) -> list[int]:
    """For each output column of the fitted ``step`` (given ``n_inputs`` columns), the
    index of the input column it comes from."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return list(range(n_inputs))
    kind = type(step).__name__
    if kind == "Pipeline":
        found = list(range(n_inputs))
        for _, sub in step.steps:
            found = [found[o] for o in owners(sub, len(found))]
        return found
    if kind == "ColumnTransformer":
        return _column_transformer(step, n_inputs)
    if kind == "OneHotEncoder":
        return [i for i, width in enumerate(_one_hot_widths(step)) for _ in range(width)]
    if kind == "SimpleImputer":
        return _imputer(step, n_inputs)
    if kind in ONE_TO_ONE:
        return list(range(n_inputs))
    raise ExplainError(f"--explain: cannot tell which inputs each output of {kind} comes "
                       "from, so its contributions cannot be summed into features")


def _column_transformer(step: Any, n_inputs: int) -> list[int]:
    indices = getattr(step, "_transformer_to_input_indices", None)
    found: list[int] = []
    for name, trans, columns in step.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        picked = (list(indices[name]) if indices is not None and name in indices
                  else _resolve(step, columns, n_inputs))
        if not picked:
            continue
        found += [picked[o] for o in owners(trans, len(picked))]
    return found


def _resolve(step: Any, columns: Any, n_inputs: int) -> list[int]:
    names: Sequence[str] = list(getattr(step, "feature_names_in_", []))
    if isinstance(columns, slice):
        return list(range(n_inputs))[columns]
    items = [columns] if isinstance(columns, str | int) else list(columns)
    if all(isinstance(c, bool | np.bool_) for c in items) and len(items) == n_inputs:
        return [i for i, keep in enumerate(items) if keep]
    if all(isinstance(c, str) for c in items):
        return [names.index(c) for c in items]
    if all(isinstance(c, int | np.integer) for c in items):
        return [int(c) % n_inputs for c in items]
    raise ExplainError("--explain: a ColumnTransformer's column selection cannot be read")


def _one_hot_widths(step: Any) -> list[int]:
    widths = getattr(step, "_n_features_outs", None)
    if widths is not None:
        return [int(w) for w in widths]
    drops = getattr(step, "drop_idx_", None)
    return [len(cats) - (drops is not None and drops[i] is not None)
            for i, cats in enumerate(step.categories_)]


def _imputer(step: Any, n_inputs: int) -> list[int]:
    keep_all = bool(getattr(step, "keep_empty_features", False))
    kept = [i for i, s in enumerate(step.statistics_.tolist())
            if keep_all or not (isinstance(s, float) and math.isnan(s))]
    indicator = getattr(step, "indicator_", None)
    flagged = [] if indicator is None else [int(i) for i in indicator.features_]
    return kept + flagged


def check_owners(transform: Any, rows: Any, found: Sequence[int]) -> None:
    """Hold ``found`` against ``transform`` on ``rows``: the output has that many columns,
    and moving one input column's values between rows changes only the columns it owns."""
    base = _dense(transform(rows))
    if base.shape[1] != len(found):
        raise ExplainError(f"--explain: the model's preprocessing gives {base.shape[1]} "
                           f"columns where its structure says {len(found)}")
    owner = np.asarray(found)
    for j in range(rows.shape[1]):
        moved = _dense(transform(_rolled(rows, j)))
        changed = ~((moved == base) | (_nan(moved) & _nan(base))).all(axis=0)
        if (changed & (owner != j)).any():
            raise ExplainError(f"--explain: an output of the model's preprocessing depends "
                               f"on more than input {j}, so contributions cannot be summed "
                               "into features")


def _rolled(rows: Any, j: int) -> Any:
    moved = rows.copy()
    if hasattr(moved, "iloc"):
        moved.iloc[:, j] = np.roll(moved.iloc[:, j].to_numpy(), 1)
    else:
        moved[:, j] = np.roll(moved[:, j], 1)
    return moved


def _dense(z: Any) -> Any:
    z = z.toarray() if hasattr(z, "toarray") else z
    return np.asarray(z, dtype=np.float64)


def _nan(z: Any) -> Any:
    return np.isnan(z)
