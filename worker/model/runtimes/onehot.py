"""A fitted OneHotEncoder's dense output, to the same bits, without its per-call checks.

``OneHotEncoder.transform`` validates its input column by column (``check_array`` and
narwhals' frame detection each time) before the few array operations of the encoding:
about 0.6 ms for 20 rows on the development machine, most of a routed ColumnTransformer's
call (routed.py). ``OneHotFast`` does the encoding's own steps (each value's position in
its column's categories, unknown ones all zeros) and builds the dense matrix that
scikit-learn's CSR ``toarray`` gives (tests/unit/model/test_onehot_fast.py).

Only for the plain encoder: no ``drop``, no infrequent categories, float64 output,
``handle_unknown`` "ignore" or "error", and categories that are all numbers (sorted, no
NaN) or all strings per column; and only where the ColumnTransformer's output is dense
(its ``toarray`` of the encoder's output is what it stacks). A batch it cannot take (a
column of another dtype) or an unknown value under "error" goes through the encoder's own
``transform``, which raises its own error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from worker.model.runtimes import class_path

ONE_HOT: Final = "sklearn.preprocessing._encoders.OneHotEncoder"
Codes = tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]
#: A column's values -> each one's category position (meaningless where unknown) and
#: whether it is a known category; None for a column of a dtype it does not take.
Lookup = Callable[[npt.NDArray[Any]], Codes | None]


@dataclass(frozen=True, slots=True)
class OneHotFast:
    """``encoder.transform(x).toarray()`` for the plain encoder."""

    encoder: Any
    lookups: tuple[Lookup, ...]
    offsets: npt.NDArray[np.int64]  # each column's first output position
    width: int
    ignore: bool  # handle_unknown="ignore": unknown values give all zeros

    def transform(self, x: Any) -> Any:
        found = [lookup(x[:, i]) for i, lookup in enumerate(self.lookups)]
        if any(f is None for f in found):
            return _dense(self.encoder.transform(x))
        codes = np.column_stack([f[0] for f in found if f is not None])
        known = np.column_stack([f[1] for f in found if f is not None])
        if not self.ignore and not known.all():
            return _dense(self.encoder.transform(x))  # its own error, naming the values
        n = x.shape[0]
        out = np.zeros((n, self.width), dtype=np.float64)
        rows = np.repeat(np.arange(n), known.sum(axis=1))
        out[rows, (codes + self.offsets)[known]] = 1.0
        return out


def onehot_fast(encoder: Any) -> OneHotFast | None:
    """The fast transform of ``encoder``, or None where its own must run."""
    if class_path(encoder) != ONE_HOT:
        return None
    plain = (getattr(encoder, "drop_idx_", 0) is None
             and not getattr(encoder, "_infrequent_enabled", True)
             and encoder.handle_unknown in ("ignore", "error")
             and np.dtype(encoder.dtype) == np.float64)
    categories = getattr(encoder, "categories_", None)
    if not plain or not categories:
        return None
    lookups = [_lookup(np.asarray(c)) for c in categories]
    if any(lookup is None for lookup in lookups):
        return None
    sizes = [len(c) for c in categories]
    offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
    return OneHotFast(encoder, tuple(lk for lk in lookups if lk is not None), offsets,
                      sum(sizes), encoder.handle_unknown == "ignore")


def _lookup(categories: npt.NDArray[Any]) -> Lookup | None:
    if len(categories) == 0:
        return None
    if categories.dtype.kind in "iuf":
        if np.isnan(categories.astype(np.float64)).any():
            return None  # a missing-value category: scikit-learn's own handling
        return _numbers(categories)
    if categories.dtype.kind == "O" and all(type(c) is str for c in categories):
        return _strings(categories)
    return None


def _numbers(categories: npt.NDArray[Any]) -> Lookup:
    """Sorted numbers (scikit-learn refuses unsorted numeric categories): a binary search
    and an equality, as its ``_encode`` and ``_check_unknown`` (NaN equals nothing)."""
    last = len(categories) - 1

    def lookup(values: npt.NDArray[Any]) -> Codes | None:
        if values.dtype.kind not in "iuf":
            return None
        codes = np.searchsorted(categories, values)
        known = categories[np.minimum(codes, last)] == values
        return codes.astype(np.int64, copy=False), known

    return lookup


def _strings(categories: npt.NDArray[Any]) -> Lookup:
    """Strings: a dict, as scikit-learn's own table (the same hashing and equality)."""
    table = {c: i for i, c in enumerate(categories.tolist())}
    find = table.get

    def lookup(values: npt.NDArray[Any]) -> Codes | None:
        if values.dtype.kind != "O":
            return None
        codes = np.fromiter((find(v, -1) for v in values.tolist()), np.int64, len(values))
        return codes, codes >= 0

    return lookup


def _dense(out: Any) -> Any:
    return out.toarray() if hasattr(out, "toarray") else out
