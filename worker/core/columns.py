"""Typed feature columns: every value checked against its feature's type, one array per
feature, for models that need more than a plain float matrix (strings, booleans,
integers, missing values).

Each column is checked for the whole batch at once (``map(type, ...)`` at C speed);
only a column that fails that check is looked at value by value, to name each bad
record's problem. A record with any problem is rejected with all of them (up to
three), its other columns untouched.

Columns come out in canonical dtypes: number float64 (NaN when missing), integer
int64 (float64 with NaN when it may be missing, as a data frame holds it), boolean
bool (object with NaN when it may be missing), string object (NaN when missing, as
pandas holds a missing string).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from worker.model.feature_types import Feature

_ABSENT: Final = object()
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_OK_TYPES: Final = {
    "number": frozenset({float, int}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
}

AnyArray = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class Columns:
    """One batch's feature columns, in the manifest's order; rows slice like a matrix."""

    features: tuple[Feature, ...]
    arrays: tuple[AnyArray, ...]
    rows: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, len(self.features))

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, rows: slice) -> Columns:
        arrays = tuple(a[rows] for a in self.arrays)
        return Columns(self.features, arrays, len(arrays[0]) if arrays else 0)

    def take(self, keep: npt.NDArray[np.bool_]) -> Columns:
        arrays = tuple(a[keep] for a in self.arrays)
        return Columns(self.features, arrays, int(keep.sum()))


def build_columns(
    records: Sequence[dict[str, Any]], features: Sequence[Feature]
) -> tuple[Columns, dict[int, list[str]]]:
    """Columns of every record, and the problems of the records that cannot be used
    (by position); the caller drops those rows."""
    problems: dict[int, list[str]] = {}
    arrays = tuple(_column(values, f, problems) for f, values in _values(records, features))
    return Columns(tuple(features), arrays, len(records)), problems


def _values(
    records: Sequence[dict[str, Any]], features: Sequence[Feature]
) -> list[tuple[Feature, Sequence[Any]]]:
    """Each feature's values; absent ones are ``_ABSENT``."""
    names = [f.name for f in features]
    columns: list[Sequence[Any]]
    try:  # every feature present: one C-level getter per record and a transpose
        getter = itemgetter(*names)
        rows = [getter(r) for r in records]
        columns = list(zip(*rows, strict=True)) if len(names) > 1 else [tuple(rows)]
    except KeyError:
        columns = [[r.get(name, _ABSENT) for r in records] for name in names]
    if not records:
        columns = [() for _ in names]
    return list(zip(features, columns, strict=True))


def _column(values: Sequence[Any], f: Feature, problems: dict[int, list[str]]) -> AnyArray:
    if _OK_TYPES[f.type].issuperset(map(type, values)) and f.categories is None:
        fast = _fast(values, f)
        if fast is not None:
            return fast
    cleaned: list[Any] = []
    for i, value in enumerate(values):
        problem = _problem(value, f)
        if problem is None:
            cleaned.append(_canonical(value, f))
        else:
            problems.setdefault(i, []).append(problem)
            cleaned.append(_placeholder(f))
    return _array(cleaned, f)


def _fast(values: Sequence[Any], f: Feature) -> AnyArray | None:
    """The column when every value already has the right type; None to look closer."""
    if f.type == "number":
        try:
            column = np.array(values, dtype=np.float64)
        except OverflowError:  # an int beyond float's range: named by the slow path
            return None
        return column if np.isfinite(column).all() else None
    if f.type == "string":
        return None if "" in values else np.array(values, dtype=object)
    if f.type == "boolean":
        return np.array(values, dtype=object if f.missing else np.bool_)
    try:
        return np.array(values, dtype=np.float64 if f.missing else np.int64)
    except OverflowError:
        return None


def _problem(value: Any, f: Feature) -> str | None:
    name, kind = f.name, type(value)
    if value is _ABSENT or value is None:
        return None if f.missing else f"feature {name!r} is missing"
    if f.type == "number":
        if kind not in (int, float) or not _finite_float(value):
            return f"feature {name!r} must be a finite number, got {_shown(value)}"
    elif f.type == "integer":
        if not _is_int64(value):
            return f"feature {name!r} must be an integer, got {_shown(value)}"
    elif f.type == "boolean":
        if kind is not bool:
            return f"feature {name!r} must be true or false, got {_shown(value)}"
    elif kind is not str:
        return f"feature {name!r} must be a string, got {_shown(value)}"
    elif not value:
        return f"feature {name!r} must be a non-empty string"
    if f.categories is not None and _canonical(value, f) not in f.categories:
        return f"feature {name!r} has an unseen category {_shown(value)}"
    return None


def _canonical(value: Any, f: Feature) -> Any:
    if value is _ABSENT or value is None:
        return _placeholder(f)
    if f.type == "integer":
        return int(value)  # 3.0 is the integer 3, as in JSON Schema
    return value


def _placeholder(f: Feature) -> Any:
    """What stands in a missing value's place (and in a rejected row's, unused)."""
    if f.type == "integer":
        return math.nan if f.missing else 0
    if f.type == "boolean" and not f.missing:
        return False
    return math.nan


def _array(values: list[Any], f: Feature) -> AnyArray:
    if f.type == "number" or (f.type == "integer" and f.missing):
        return np.array(values, dtype=np.float64)
    if f.type == "integer":
        return np.array(values, dtype=np.int64)
    if f.type == "boolean" and not f.missing:
        return np.array(values, dtype=np.bool_)
    return np.array(values, dtype=object)


def _finite_float(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _is_int64(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return bool(value.is_integer() and _INT64_MIN <= value <= _INT64_MAX)
    return kind is int and _INT64_MIN <= value <= _INT64_MAX


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if type(value) is int and not _finite_float(value):
        return "an out-of-range int"
    if type(value) in (str, int, float) and len(repr(value)) <= 40:
        return f"{type(value).__name__} {value!r}"
    return "null" if value is None else type(value).__name__
