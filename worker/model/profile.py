"""The reference profile of a bundle's inputs: what each feature looked like in the rows
the user chose (the training frame or a holdout), for drift and data-quality figures.

Per feature, in the manifest's order:

- numbers and integers: ``edges``, the inner bin edges from quantiles of the present
  values (strictly increasing, so at most ``bins - 1`` of them); bin 0 is everything
  below ``edges[0]``, bin i is ``[edges[i-1], edges[i])``, the last bin everything from
  ``edges[-1]`` up. The outer bins are open so that a live value outside the reference
  range still lands in a bin (and is counted out of range as well). ``counts`` per bin,
  ``min`` and ``max`` of the present values.
- strings and booleans: the ``top`` values (at most ``top_k``, by count, then by value)
  with their ``counts``, and ``other``, the count of the present values beyond them.
  A profile is ``complete`` when ``other`` is 0: then a live value outside ``top`` is a
  category the reference never had (unseen); otherwise that cannot be told.
- every feature: ``rows`` profiled and ``missing`` among them (missing rate =
  missing / rows).

Counts, not rates, are stored: figures come out of them exactly, and the live counts
(worker/core/feature_counts.py) use the very same bins. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson

from worker.model.feature_types import Feature, is_missing

DEFAULT_BINS: Final = 10
DEFAULT_TOP_K: Final = 50
MAX_BINS: Final = 100
MAX_TOP_K: Final = 1000

AnyArray: TypeAlias = npt.NDArray[Any]
FloatArray: TypeAlias = npt.NDArray[np.float64]
ProfileKind: TypeAlias = Literal["numeric", "categorical"]
TopValue: TypeAlias = str | bool


class ProfileError(ValueError):
    """A profile that cannot be used; the message is one short line."""


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    name: str
    kind: ProfileKind
    rows: int
    missing: int
    #: numeric: inner bin edges; len(counts) == len(edges) + 1.
    edges: tuple[float, ...] = ()
    #: numeric: per bin; categorical: per value of ``top``.
    counts: tuple[int, ...] = ()
    min: float | None = None
    max: float | None = None
    top: tuple[TopValue, ...] = ()
    other: int = 0

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def missing_rate(self) -> float | None:
        return self.missing / self.rows if self.rows else None

    @property
    def complete(self) -> bool:
        """Categorical: every reference value is in ``top`` (unseen values can be told)."""
        return self.kind == "categorical" and self.other == 0

    def bin_counts(self) -> tuple[int, ...]:
        """The reference's counts in the bins drift is measured on: numeric bins, or the
        top values then ``other``."""
        return self.counts if self.kind == "numeric" else (*self.counts, self.other)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "rows": self.rows,
                               "missing": self.missing}
        if self.kind == "numeric":
            out.update(edges=list(self.edges), counts=list(self.counts), min=self.min,
                       max=self.max)
        else:
            out.update(top=list(self.top), counts=list(self.counts), other=self.other)
        return out

    @classmethod
    def parse(cls, data: object) -> FeatureProfile:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ProfileError("every profile entry must be an object with a name")
        name, kind = data["name"], data.get("kind")
        rows, missing = _count(data, "rows", name), _count(data, "missing", name)
        if missing > rows:
            raise ProfileError(f"profile of {name!r}: missing exceeds rows")
        if kind == "numeric":
            return _parse_numeric(name, rows, missing, data)
        if kind == "categorical":
            return _parse_categorical(name, rows, missing, data)
        raise ProfileError(f"profile of {name!r}: kind must be numeric or categorical")


@dataclass(frozen=True, slots=True)
class Profile:
    """The reference profile of every feature, in the manifest's feature order."""

    features: tuple[FeatureProfile, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features]}

    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the canonical JSON: names the bins that live
        counts (worker/core/feature_stats.py) are made with."""
        canonical = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]

    @classmethod
    def parse(cls, data: object) -> Profile:
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            raise ProfileError("'profile' must be an object with a list of features")
        return cls(tuple(FeatureProfile.parse(item) for item in data["features"]))

    def check(self, specs: Sequence[Feature]) -> None:
        """The profile describes exactly these features, each by its type's kind."""
        if self.names != tuple(f.name for f in specs):
            raise ProfileError(f"profile features {list(self.names)} differ from the "
                               f"model's {[f.name for f in specs]}")
        for f, p in zip(specs, self.features, strict=True):
            if p.kind != kind_of(f):
                raise ProfileError(f"profile of {f.name!r} is {p.kind}, the feature a {f.type}")


def kind_of(feature: Feature) -> ProfileKind:
    return "numeric" if feature.type in ("number", "integer") else "categorical"


def profile_of(
    data: Any, specs: Sequence[Feature], *, bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K
) -> Profile:
    """The profile of ``data`` (a DataFrame with the features' columns, or a 2-D array in
    the features' order) for ``specs``."""
    if not 2 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in [2, {MAX_BINS}], got {bins}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be in [1, {MAX_TOP_K}], got {top_k}")
    if len(data) == 0:
        raise ValueError("the reference has no rows")
    out = []
    for position, f in enumerate(specs):
        values = _column(data, f.name, position)
        if kind_of(f) == "numeric":
            out.append(numeric_profile(f.name, values, bins))
        else:
            out.append(categorical_profile(f.name, values, top_k, f.type == "boolean"))
    return Profile(tuple(out))


def numeric_profile(name: str, values: Sequence[Any] | AnyArray, bins: int) -> FeatureProfile:
    array = _floats(values)
    present = array[~np.isnan(array)]
    if not np.isfinite(present).all():
        raise ValueError(f"the reference's {name!r} has an infinite value")
    if present.size == 0:
        return FeatureProfile(name, "numeric", len(array), len(array), (), (0,))
    quantiles = np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    # Edges above the minimum only: an edge at the minimum would leave bin 0 empty.
    edges = np.unique(quantiles[quantiles > present.min()])
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return FeatureProfile(name, "numeric", len(array), int(array.size - present.size),
                          tuple(edges.tolist()), tuple(counts.tolist()),
                          float(present.min()), float(present.max()))


def categorical_profile(
    name: str, values: Sequence[Any] | AnyArray, top_k: int, boolean: bool = False
) -> FeatureProfile:
    present = [_category(v, boolean) for v in list(values) if not is_missing(v)]
    tally = Counter(present)
    ranked = sorted(tally.items(), key=lambda item: (-item[1], str(item[0])))[:top_k]
    kept = sum(c for _, c in ranked)
    return FeatureProfile(name, "categorical", len(values), len(values) - len(present),
                          counts=tuple(c for _, c in ranked), top=tuple(v for v, _ in ranked),
                          other=len(present) - kept)


def parse_optional(value: object) -> Profile | None:
    return None if value is None else Profile.parse(value)


def as_profile(value: Profile | Mapping[str, Any]) -> Profile:
    return value if isinstance(value, Profile) else Profile.parse(dict(value))


def _category(value: Any, boolean: bool) -> TopValue:
    if hasattr(value, "item"):
        value = value.item()
    if boolean:
        if not isinstance(value, bool | int | float) or value not in (0, 1):
            raise ValueError(f"a boolean feature has the value {value!r}")
        return bool(value)
    if not isinstance(value, str):
        raise ValueError(f"a string feature has the value {value!r}")
    return value


def _column(data: Any, name: str, position: int) -> AnyArray:
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return np.asarray(data[name].to_numpy())
    return np.asarray(data)[:, position]


def _floats(values: Sequence[Any] | AnyArray) -> FloatArray:
    """float64, NaN where missing: at once for a numeric array, else value by value."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64)
    return np.array([math.nan if is_missing(v) else v for v in list(values)], dtype=np.float64)


def _count(data: dict[str, Any], key: str, name: str) -> int:
    value = data.get(key)
    if type(value) is not int or value < 0:
        raise ProfileError(f"profile of {name!r}: {key!r} must be a count")
    return value


def _counts(data: dict[str, Any], name: str) -> tuple[int, ...]:
    value = data.get("counts")
    if not isinstance(value, list) or not all(type(c) is int and c >= 0 for c in value):
        raise ProfileError(f"profile of {name!r}: 'counts' must be a list of counts")
    return tuple(value)


def _parse_numeric(name: str, rows: int, missing: int, data: dict[str, Any]) -> FeatureProfile:
    edges, counts = data.get("edges"), _counts(data, name)
    if not isinstance(edges, list) or not all(_finite(e) for e in edges):
        raise ProfileError(f"profile of {name!r}: 'edges' must be a list of finite numbers")
    floats = np.array(edges, dtype=np.float64)
    if len(floats) > 1 and not (np.diff(floats) > 0).all():
        raise ProfileError(f"profile of {name!r}: 'edges' must be strictly increasing")
    if len(counts) != len(edges) + 1 or sum(counts) != rows - missing:
        raise ProfileError(f"profile of {name!r}: needs len(edges) + 1 counts summing to "
                           "rows - missing")
    low, high = _bound(data.get("min")), _bound(data.get("max"))
    if rows > missing and (low is None or high is None or low > high):
        raise ProfileError(f"profile of {name!r}: 'min' and 'max' must be numbers, min <= max")
    return FeatureProfile(name, "numeric", rows, missing, tuple(floats.tolist()), counts,
                          low, high)


def _parse_categorical(
    name: str, rows: int, missing: int, data: dict[str, Any]
) -> FeatureProfile:
    top, counts, other = data.get("top"), _counts(data, name), _count(data, "other", name)
    if not isinstance(top, list) or not all(type(v) in (str, bool) for v in top):
        raise ProfileError(f"profile of {name!r}: 'top' must be a list of strings or booleans")
    if len(set(top)) != len(top) or len(counts) != len(top):
        raise ProfileError(f"profile of {name!r}: 'top' values must be distinct, one count each")
    if sum(counts) + other != rows - missing:
        raise ProfileError(f"profile of {name!r}: counts and other must sum to rows - missing")
    return FeatureProfile(name, "categorical", rows, missing, counts=counts, top=tuple(top),
                          other=other)


def _bound(value: object) -> float | None:
    return float(value) if _finite(value) else None  # type: ignore[arg-type]


def _finite(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]

