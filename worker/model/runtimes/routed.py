"""A ColumnTransformer pipeline scored from its columns' arrays, to the same bits.

scikit-learn's ``ColumnTransformer`` fitted on a DataFrame selects each transformer's
columns from the frame by name (pandas indexing), checks every sub-frame with
``check_array`` and narwhals, and only then transforms: about 5 ms a call on the
development machine, whatever the rows (docs/benchmarks/index.md). For a stream of small
batches that fixed cost is most of the model's time and all of its tail. ``Routed`` hands
each transformer a plain array of its columns, which the worker already holds, stacks the
outputs as the ColumnTransformer does, and runs the rest of the pipeline on them: the
same arithmetic, so the same bits (tests/unit/model/test_routed_fast.py), at about a
quarter of the cost.

A ColumnTransformer fitted on a frame is routed only where an array is known to compute
the same as a frame: the exact transformer classes below (alone or in a Pipeline of
them, or a bare passthrough), columns named by a list, and no pandas output
(``set_output``). Anything else keeps scikit-learn's own path; so does a batch whose
columns of one transformer differ in dtype. Its transformers used here are copies told no
feature names, because they are given positions already matched by name (otherwise each
call would warn that an array has none).

A ColumnTransformer fitted on an array (the demo model) gives each transformer
``X[:, positions]`` itself; routed, each gets that same array, so any transformer goes,
and what is saved is the ColumnTransformer's own checks and joblib's dispatch.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from worker.core.frames import as_frame
from worker.model.runtimes import FloatArray, class_path
from worker.model.runtimes.onehot import onehot_fast

COLUMN_TRANSFORMER: Final = "sklearn.compose._column_transformer.ColumnTransformer"
PIPELINE: Final = "sklearn.pipeline.Pipeline"
FUNCTION: Final = "sklearn.preprocessing._function_transformer.FunctionTransformer"
#: Transformers whose ``transform`` on a 2-D array of one dtype equals theirs on a
#: DataFrame of the same columns (each validates and converts the same values alike).
ROUTABLE: Final = frozenset({
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._data.MaxAbsScaler",
    "sklearn.preprocessing._data.RobustScaler",
    "sklearn.impute._base.SimpleImputer",
})


_SCALERS: Final = frozenset(k for k in ROUTABLE if k.startswith("sklearn.preprocessing._data."))
_INT_AND_FLOAT: Final = frozenset({np.dtype(np.int64), np.dtype(np.float64)})


@dataclass(frozen=True, slots=True)
class Route:
    """One transformer of the ColumnTransformer and the positions of the input columns
    it takes (in the estimator's ``feature_names_in_``, the manifest's order, for one
    fitted on a frame)."""

    transformer: Any
    columns: tuple[int, ...]
    #: Its first step converts its input to float64 whatever the columns' dtypes (a
    #: scaler, a mean or median imputer), as scikit-learn's check of a frame of integer
    #: and float columns does: such columns may differ in dtype.
    numeric: bool = False


@dataclass(frozen=True, slots=True)
class Routed:
    """``Pipeline([ColumnTransformer, *rest])`` scored with each route fed an array.

    Fitted on an array: it takes the runtime's matrix. Fitted on a frame: it takes the
    batch's typed columns (anything with ``arrays`` in the manifest's order, which the
    loader checked against ``feature_names_in_``), so no DataFrame is built for it, or a
    DataFrame (a caller's, an explainer's)."""

    routes: tuple[Route, ...]
    sparse: bool  # the ColumnTransformer's ``sparse_output_``
    rest: Any  # the pipeline's steps after the ColumnTransformer, as a Pipeline
    method: str  # "predict_proba" or "predict"
    own: Any  # the whole pipeline: its own method for a batch the routes cannot take
    names: tuple[str, ...] | None  # the frame's column names; None: fitted on an array

    def __call__(self, data: Any) -> FloatArray:
        if self.names is None:
            blocks = [data[:, list(r.columns)] for r in self.routes]
        else:
            arrays = _arrays(data, self.names)
            blocks = [_block([arrays[c] for c in r.columns], r.numeric) for r in self.routes]
            if any(b is None for b in blocks):
                return self._own(as_frame(data))
        parts = [r.transformer.transform(b) for r, b in zip(self.routes, blocks, strict=True)]
        stacked = _hstack(parts, self.sparse)
        return np.asarray(getattr(self.rest, self.method)(stacked), dtype=np.float64)

    def _own(self, frame: Any) -> FloatArray:
        return np.asarray(getattr(self.own, self.method)(frame), dtype=np.float64)


def routed_fast(estimator: Any, method: str) -> Routed | None:
    """The routed path for ``estimator``, or None where scikit-learn's own must run."""
    steps = getattr(estimator, "steps", None)
    if class_path(estimator) != PIPELINE or not steps or len(steps) < 2:
        return None
    columns = steps[0][1]
    if class_path(columns) != COLUMN_TRANSFORMER or _pandas_out(columns):
        return None
    fitted = getattr(columns, "feature_names_in_", None)
    names = None if fitted is None else tuple(str(n) for n in fitted)
    routes = _routes(columns.transformers_, names, int(getattr(columns, "n_features_in_", 0)))
    if routes is None or not routes:
        return None
    sparse = bool(columns.sparse_output_)
    if not sparse:  # the ColumnTransformer stacks each one-hot output's toarray()
        routes = tuple(_with_fast_one_hot(r) for r in routes)
    return Routed(routes, sparse, estimator[1:], method, estimator, names)


def _routes(fitted: Sequence[tuple[str, Any, Any]], names: tuple[str, ...] | None,
            width: int) -> tuple[Route, ...] | None:
    out: list[Route] = []
    for _, transformer, selection in fitted:
        picked = _columns(selection, names, width)
        if picked is None:
            return None
        if transformer == "drop" or not picked:
            continue  # as ColumnTransformer.transform: dropped and empty ones give nothing
        # On an array the ColumnTransformer hands it ``X[:, positions]``, as here.
        used = transformer if names is None else _unnamed_copy(transformer)
        if used is None or isinstance(used, str):
            return None
        out.append(Route(used, picked, _converts_to_float(used)))
    return tuple(out)


def _columns(selection: Any, names: tuple[str, ...] | None, width: int) -> tuple[int, ...] | None:
    """A list of positions, or of names when fitted on a frame, as positions; None for
    any other selection (a single name or position gives a 1-D column, a mask or a slice
    is not routed)."""
    if not isinstance(selection, list | tuple):
        return None
    if names is not None and all(isinstance(c, str) for c in selection):
        return tuple(names.index(c) for c in selection) if set(selection) <= set(names) else None
    if all(isinstance(c, int | np.integer) and 0 <= c < width for c in selection):
        return tuple(int(c) for c in selection)
    return None


def _unnamed_copy(transformer: Any) -> Any:
    """A copy of a routable transformer (or Pipeline of them) without feature names."""
    steps = [s for _, s in transformer.steps] if class_path(transformer) == PIPELINE else None
    parts = steps if steps is not None else [transformer]
    if not parts or not all(_routable(p) and not _pandas_out(p) for p in parts):
        return None
    if steps is not None and _pandas_out(transformer):
        return None
    twin = copy.deepcopy(transformer)
    for part in [s for _, s in twin.steps] if steps is not None else [twin]:
        if hasattr(part, "feature_names_in_"):
            del part.feature_names_in_
    return twin


def _with_fast_one_hot(route: Route) -> Route:
    """The route with onehot.py's transform for a plain OneHotEncoder (dense output)."""
    fast = onehot_fast(route.transformer)
    return route if fast is None else dataclasses.replace(route, transformer=fast)


def _converts_to_float(transformer: Any) -> bool:
    """Whether the route's first step takes any numbers as float64 (``Route.numeric``)."""
    first = transformer.steps[0][1] if class_path(transformer) == PIPELINE else transformer
    kind = class_path(first)
    if kind == "sklearn.impute._base.SimpleImputer":
        return getattr(first, "strategy", None) in ("mean", "median")
    return kind in _SCALERS


def _routable(transformer: Any) -> bool:
    """One of ROUTABLE, or the identity a ``passthrough`` became (a frame's columns as
    they are, which ``np.hstack`` turns into the same array as ours)."""
    if class_path(transformer) in ROUTABLE:
        return True
    return (class_path(transformer) == FUNCTION and getattr(transformer, "func", 0) is None
            and not getattr(transformer, "validate", True)
            and not getattr(transformer, "kw_args", None))


def _arrays(data: Any, names: tuple[str, ...]) -> Sequence[Any]:
    """Every input column as an array: typed columns' own, or a DataFrame's."""
    arrays = getattr(data, "arrays", None)
    return arrays if arrays is not None else [data[n].to_numpy() for n in names]


def _block(arrays: list[Any], numeric: bool) -> Any:
    """The columns as one 2-D array, or None when their dtypes differ (an array would
    convert them, where a frame keeps each column's own) unless the route converts its
    input to float64 anyway and they are all integers and floats (numpy stacks those as
    float64, the very values the frame's check gives)."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1 and not (numeric and dtypes <= _INT_AND_FLOAT):
        return None
    return np.column_stack(arrays)


def _hstack(parts: list[Any], sparse_output: bool) -> Any:
    """As ``ColumnTransformer._hstack`` for its default (non-pandas) output."""
    from scipy import sparse
    from sklearn.utils import check_array

    if sparse_output:
        converted = [check_array(p, accept_sparse=True, ensure_all_finite=False)
                     for p in parts]
        return sparse.hstack(converted).tocsr()
    return np.hstack([p.toarray() if sparse.issparse(p) else p for p in parts])


def _pandas_out(obj: Any) -> bool:
    """Whether ``set_output`` asked ``obj`` for frames (pandas, polars) from transform."""
    config = getattr(obj, "_sklearn_output_config", None) or {}
    return config.get("transform", "default") not in ("default", None)
