"""Feature types inferred from the data a model was fitted or checked on.

A DataFrame's dtypes say it (float: number, integer: integer, bool: boolean, object,
string or category: string); an ndarray is numbers (the estimator turned it into
floats anyway) unless it is bool or holds strings. A feature may be missing when the
data has a missing value in it, or when the estimator says it accepts NaN and the
feature is numeric; write_bundle then checks that the estimator really takes a
missing value there (``probe_missing``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from worker.model.feature_types import Feature, FeatureType, is_missing


def is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "iloc") and hasattr(data, "dtypes")


def feature_names(estimator: Any, data: Any, given: Sequence[Any] | None) -> list[str]:
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None:
        return [str(n) for n in fitted]
    if given:
        return [g if isinstance(g, str) else _spec_name(g) for g in given]
    if is_frame(data):
        return [str(c) for c in data.columns]
    raise ValueError("the estimator was fitted on an array: give features=[names], in the "
                     "order of the array's columns")


def infer_features(
    estimator: Any, data: Any, given: Sequence[Any] | None
) -> tuple[Feature, ...]:
    """Explicit specs as given; otherwise types (and missing) from ``data``'s columns."""
    names = feature_names(estimator, data, given)
    if given and not all(isinstance(g, str) for g in given):
        specs = tuple(g if isinstance(g, Feature) else Feature.parse(dict(g)) for g in given)
        if [f.name for f in specs] != names:
            raise ValueError(f"features {[f.name for f in specs]} differ from the "
                             f"estimator's {names}")
        return specs
    nan_ok = _allows_nan(estimator)
    out = []
    for position, name in enumerate(names):
        values = _column(data, name, position)
        kind = _type_of(values)
        missing = any(is_missing(v) for v in values.tolist()) or (
            nan_ok and kind in ("number", "integer"))
        out.append(Feature(name, kind, missing))
    strict = strict_categories(estimator, names)
    return tuple(_with_categories(f, strict.get(f.name)) for f in out)


def refit_features(estimator: Any, specs: Sequence[Feature]) -> tuple[Feature, ...]:
    """A served model's typed features for ``estimator``, a refit of its pipeline: names,
    types and missing as they were; categories those its own strict encoders learned
    (a refit on other data may know other ones)."""
    strict = strict_categories(estimator, [f.name for f in specs])
    return tuple(_with_categories(Feature(f.name, f.type, f.missing), strict.get(f.name))
                 for f in specs)


def _with_categories(f: Feature, categories: list[Any] | None) -> Feature:
    if categories is None or f.type not in ("string", "integer"):
        return f
    want = str if f.type == "string" else int
    values = [c.item() if hasattr(c, "item") else c for c in categories if not is_missing(c)]
    if not values or not all(type(v) is want for v in values):
        return f
    return Feature(f.name, f.type, f.missing, tuple(values))


def strict_categories(estimator: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """Features whose encoder refuses unknown categories (``handle_unknown="error"``),
    with the categories it knows: an unseen one is then a dead letter naming the feature,
    which is what scikit-learn's own refusal means."""
    out: dict[str, list[Any]] = {}
    steps = getattr(estimator, "steps", None)
    first = steps[0][1] if steps else estimator
    transformers = getattr(first, "transformers_", None)
    if transformers is None:  # an encoder (or a pipeline starting with one) on all columns
        _encoder_categories(first, list(names), out)
        return out
    for _, transformer, columns in transformers:
        _encoder_categories(transformer, _column_names(columns, names), out)
    return out


def _encoder_categories(transformer: Any, columns: list[str], out: dict[str, list[Any]]) -> None:
    steps = getattr(transformer, "steps", None)
    for step in [s for _, s in steps] if steps else [transformer]:
        if type(step).__name__ == "SimpleImputer":
            continue  # fills missing values only: the encoder still sees every other value
        categories = getattr(step, "categories_", None)
        if getattr(step, "handle_unknown", None) == "error" and categories is not None:
            for name, known in zip(columns, categories, strict=False):
                out[name] = list(known)
        return


def _column_names(columns: Any, names: Sequence[str]) -> list[str]:
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, slice):
        return list(names[columns])
    picked = list(columns) if hasattr(columns, "__iter__") else []
    if picked and all(isinstance(c, bool | np.bool_) for c in picked):
        return [n for n, keep in zip(names, picked, strict=False) if keep]
    return [names[int(c)] if not isinstance(c, str) else c for c in picked]


def _spec_name(spec: Any) -> str:
    if isinstance(spec, Feature):
        return spec.name
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return str(spec["name"])
    raise ValueError(f"a feature must be a name, a Feature or a mapping, got {spec!r}")


def _column(data: Any, name: str, position: int) -> Any:
    if is_frame(data):
        return data[name]
    return np.asarray(data)[:, position]


def _type_of(values: Any) -> FeatureType:
    dtype = values.dtype
    kind = getattr(dtype, "kind", "O")
    if kind == "b" or str(dtype) == "boolean":
        return "boolean"
    if kind in "iu" or str(dtype) in ("Int64", "Int32", "Int16", "Int8"):
        return "integer" if hasattr(values, "iloc") else "number"
    if kind == "f":
        return "number"
    present = [v for v in values.tolist() if not is_missing(v)]
    if present and all(isinstance(v, bool | np.bool_) for v in present):
        return "boolean"
    if present and all(isinstance(v, str) for v in present):
        return "string"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "number"
    raise ValueError(f"column {getattr(values, 'name', '')!r} mixes types; give its type "
                     "in features=[{'name': ..., 'type': ...}]")


def _allows_nan(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(estimator).input_tags.allow_nan)
    except Exception:  # an estimator without scikit-learn tags: assume not
        return False


def probe_missing(estimator: Any, task: str, rows: Any, feature: Feature,
                  position: int) -> str | None:
    """Score ``rows`` with ``feature`` missing; None when the estimator takes it, else
    why not."""
    probe = rows.copy()
    if is_frame(probe):
        probe[feature.name] = None if feature.type == "string" else np.nan
    else:
        probe = np.array(probe, dtype=object if probe.dtype == object else np.float64)
        probe[:, position] = np.nan
    method = estimator.predict if task == "regression" else estimator.predict_proba
    try:
        out = np.asarray(method(probe), dtype=np.float64)
    except Exception as exc:  # the estimator refuses a missing value here
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None if np.isfinite(out).all() else "non-finite outputs"


def with_strict_categories(estimator: Any, specs: Sequence[Feature]) -> tuple[Feature, ...]:
    """``specs`` (typed elsewhere: an MLflow signature) with the categories that the
    estimator's encoders insist on (``strict_categories``)."""
    strict = strict_categories(estimator, [f.name for f in specs])
    return tuple(_with_categories(f, strict.get(f.name)) for f in specs)
