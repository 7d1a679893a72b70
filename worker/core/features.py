"""Decoded events -> the input the model's runtime takes, in the model's feature order.

Which input is chosen once per bundle (``extractor``): a float64 matrix built by the
fast path below when every feature is a number that is never missing (the common
case of a model fitted on an array), otherwise typed columns (worker/core/columns.py)
turned into what the runtime takes: a float64 or object matrix, a pandas DataFrame
(worker/core/frames.py) or the columns themselves (ONNX).

The float64 fast path is the hot path. The common case (every record well-formed) is handled
per batch with C-level helpers (``itemgetter``, ``map(type, ...)``, one
``np.array`` and one ``np.isfinite``); only records that fail those batch
checks are looked at one by one, to say precisely what is wrong with them.

``np.array`` would happily turn "1.5" or True into a float, so value types are
checked *before* conversion: only exact ``int`` and ``float`` are accepted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from worker.core.columns import Columns, build_columns
from worker.core.decoders import NOT_AN_OBJECT
from worker.errors import Rejection, RejectKind
from worker.model.feature_types import Feature, plain_numbers

NUMBER_TYPES: Final = frozenset({int, float})
_MAX_PROBLEMS: Final = 3

NO_ID: Final = Rejection(RejectKind.SCHEMA, "event needs a string 'id'")


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """Rows of ``matrix`` correspond, in order, to ``records[i] for i in valid``.

    ``matrix`` is what the runtime takes: a float64 ndarray on the fast path, else an
    object ndarray, a DataFrame or ``Columns``; each has ``shape`` and slices by rows.
    """

    matrix: Any
    valid: list[int]
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)
    #: The typed columns ``matrix`` was made from (None on the float64 fast path, where
    #: ``matrix`` is them): what the feature counts (feature_counts.py) read.
    columns: Columns | None = None


#: records, assume_numeric (a schema guaranteed every feature an int or float) -> batch.
Extractor = Callable[[Sequence[object], bool], FeatureBatch]
INPUTS: Final = ("float64", "object", "frame", "columns")


def extractor(features: Sequence[Feature], runtime_input: str) -> Extractor:
    """How a bundle's records become its runtime's input; chosen once, at load."""
    if runtime_input not in INPUTS:
        raise ValueError(f"unknown runtime input {runtime_input!r}")
    specs = tuple(features)
    if runtime_input == "float64" and plain_numbers(specs):
        names = tuple(f.name for f in specs)
        return lambda records, typed: extract(records, names, assume_numeric=typed)
    return lambda records, typed: extract_typed(records, specs, runtime_input)


def extract_typed(
    records: Sequence[object], features: Sequence[Feature], runtime_input: str
) -> FeatureBatch:
    """Typed columns of the records that carry an id, converted to ``runtime_input``."""
    rejected: list[tuple[int, Rejection]] = []
    candidates = _with_ids(records, True, rejected)
    columns, problems = build_columns([records[i] for i in candidates], features)  # type: ignore[misc]
    if problems:
        keep = np.ones(len(candidates), dtype=np.bool_)
        for pos, found in problems.items():
            keep[pos] = False
            rejected.append((candidates[pos], _rejection(found)))
        candidates = [c for c, k in zip(candidates, keep.tolist(), strict=True) if k]
        columns = columns.take(keep)
        rejected.sort(key=lambda item: item[0])
    return FeatureBatch(_convert(columns, runtime_input), candidates, rejected, columns)


def estimator_input(runtime: Any) -> str:
    """What the model object itself takes, to fit or explain it: the runtime's input,
    but a frame where the runtime scores a frame-fitted model from typed columns
    (``fitted_input``: worker/model/runtimes/routed.py)."""
    return str(getattr(runtime, "fitted_input", runtime.input))


def for_estimator(batch: FeatureBatch, runtime: Any) -> Any:
    """``batch``'s rows as the model object itself takes them (``estimator_input``)."""
    wanted = estimator_input(runtime)
    if wanted == runtime.input or batch.columns is None:
        return batch.matrix
    return _convert(batch.columns, wanted)


def _convert(columns: Columns, runtime_input: str) -> Any:
    if runtime_input == "columns":
        return columns
    if runtime_input == "frame":
        from worker.core.frames import to_frame  # pandas only for bundles that need it

        return to_frame(columns)
    if not columns.arrays or columns.rows == 0:
        return np.empty((columns.rows, len(columns.features)),
                        dtype=np.float64 if runtime_input == "float64" else object)
    if runtime_input == "float64":  # booleans 0/1, missing NaN: what check_array makes
        return np.column_stack([a.astype(np.float64) for a in columns.arrays])
    return np.column_stack([a.astype(object) for a in columns.arrays])


def extract(
    records: Sequence[object],
    feature_names: Sequence[str],
    require_id: bool = True,
    assume_numeric: bool = False,
) -> FeatureBatch:
    """Build the feature matrix of ``records``; reject what cannot be scored.

    ``rejected`` is sorted by record index. Every input index is in exactly one
    of ``valid`` and ``rejected``. ``assume_numeric`` skips the per-value type
    test when a schema already guaranteed every feature is an int or float.
    """
    if not feature_names:
        raise ValueError("feature_names must not be empty")
    rejected: list[tuple[int, Rejection]] = []
    candidates = _with_ids(records, require_id, rejected)
    getter = _row_getter(feature_names)
    rows, typed_ok = _gather_rows(records, candidates, getter, assume_numeric)
    matrix = _to_matrix(rows, len(feature_names)) if typed_ok else None
    if matrix is None:
        candidates, rows = _diagnose_rows(records, candidates, feature_names, rejected)
        matrix = _to_matrix(rows, len(feature_names))
        assert matrix is not None  # the slow path kept only float-sized ints and floats
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        for pos in np.flatnonzero(~finite).tolist():
            index = candidates[pos]
            rejected.append((index, _non_finite(records[index], feature_names)))
        candidates = [candidates[pos] for pos in np.flatnonzero(finite).tolist()]
        matrix = np.ascontiguousarray(matrix[finite])
    rejected.sort(key=lambda item: item[0])
    return FeatureBatch(matrix=matrix, valid=candidates, rejected=rejected)


def _with_ids(
    records: Sequence[object], require_id: bool, rejected: list[tuple[int, Rejection]]
) -> list[int]:
    """Indices of records that are objects (with a non-empty string id)."""
    if require_id:
        ok = [
            i
            for i, r in enumerate(records)
            if type(r) is dict and type(r.get("id")) is str and r["id"]
        ]
    else:
        ok = [i for i, r in enumerate(records) if type(r) is dict]
    if len(ok) != len(records):
        good = set(ok)
        for i, record in enumerate(records):
            if i not in good:
                rejected.append((i, NO_ID if isinstance(record, dict) else NOT_AN_OBJECT))
    return ok


def _row_getter(feature_names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    if len(feature_names) == 1:
        only = feature_names[0]
        return lambda record: (record[only],)
    return itemgetter(*feature_names)


def _gather_rows(
    records: Sequence[object],
    candidates: list[int],
    getter: Callable[[Any], tuple[Any, ...]],
    assume_numeric: bool,
) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows of feature values; the flag says all are present and int/float."""
    try:
        rows = [getter(records[i]) for i in candidates]
    except KeyError:
        return [], False
    return rows, assume_numeric or NUMBER_TYPES.issuperset(map(type, chain.from_iterable(rows)))


def _to_matrix(rows: list[tuple[Any, ...]], width: int) -> npt.NDArray[np.float64] | None:
    if not rows:
        return np.empty((0, width), dtype=np.float64)
    try:
        # fromiter over the flattened rows is ~25 % faster than np.array(rows).
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width)
    except (OverflowError, TypeError, ValueError):  # found and named by the slow path
        return None
    return flat.reshape(len(rows), width)


def _diagnose_rows(
    records: Sequence[object],
    candidates: list[int],
    feature_names: Sequence[str],
    rejected: list[tuple[int, Rejection]],
) -> tuple[list[int], list[tuple[Any, ...]]]:
    """Slow path: keep the good rows, reject the others with a precise reason."""
    kept: list[int] = []
    kept_rows: list[tuple[Any, ...]] = []
    for index in candidates:
        record = records[index]
        assert isinstance(record, dict)
        problems = _problems(record, feature_names)
        if problems:
            rejected.append((index, _rejection(problems)))
        else:
            kept.append(index)
            kept_rows.append(tuple(record[name] for name in feature_names))
    return kept, kept_rows


def _problems(record: dict[str, Any], feature_names: Sequence[str]) -> list[str]:
    problems: list[str] = []
    for name in feature_names:
        if name not in record:
            problems.append(f"feature {name!r} is missing")
            continue
        value = record[name]
        if type(value) not in NUMBER_TYPES:
            problems.append(f"feature {name!r} must be a finite number, got {_type_name(value)}")
        elif type(value) is int and not _int_fits_float(value):
            problems.append(f"feature {name!r} must be a finite number, got an out-of-range int")
    return problems


def _non_finite(record: object, feature_names: Sequence[str]) -> Rejection:
    assert isinstance(record, dict)
    problems = [
        f"feature {name!r} must be a finite number, got {record[name]!r}"
        for name in feature_names
        if not math.isfinite(record[name])
    ]
    return _rejection(problems)


def _rejection(problems: list[str]) -> Rejection:
    shown = "; ".join(problems[:_MAX_PROBLEMS])
    if len(problems) > _MAX_PROBLEMS:
        shown += f"; and {len(problems) - _MAX_PROBLEMS} more"
    return Rejection(RejectKind.FEATURES, shown)


def _int_fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return type(value).__name__
