"""Typed features of a model bundle: what each input of the estimator is and may be.

A feature has a name, a type (``number``, ``integer``, ``boolean``, ``string``: a
category) and whether it may be missing (absent or ``null`` in an event). A string
feature may also list ``categories``: the only values the model accepts (recorded when
the model's encoder refuses unknown categories), so an unseen one is a dead letter
naming the feature rather than a model error.

``model.json`` stores them as objects; an older manifest's plain list of names still
reads as all-``number``, never missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast

FeatureType: TypeAlias = Literal["number", "integer", "boolean", "string"]
Category: TypeAlias = str | int
FEATURE_TYPES: Final[tuple[FeatureType, ...]] = ("number", "integer", "boolean", "string")
_KEYS: Final = frozenset({"name", "type", "missing", "categories"})


class FeatureSpecError(ValueError):
    """A feature description that cannot be used; the message is one short line."""


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: FeatureType = "number"
    #: May be absent or null: the model gets NaN (numbers) or None (strings) for it.
    missing: bool = False
    #: The only values the model accepts (its encoder refuses others); None: any.
    categories: tuple[Category, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "missing": self.missing}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def parse(cls, data: object) -> Feature:
        if isinstance(data, str):  # older manifests: a bare name is a number
            return cls(_name(data))
        if not isinstance(data, dict):
            raise FeatureSpecError("every feature must be a name or an object with a name")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise FeatureSpecError(f"feature {data.get('name')!r}: unknown keys {unknown}")
        name = _name(data.get("name"))
        kind = data.get("type", "number")
        if kind not in FEATURE_TYPES:
            raise FeatureSpecError(f"feature {name!r}: unknown type {kind!r}, expected one "
                                   f"of {', '.join(FEATURE_TYPES)}")
        missing = data.get("missing", False)
        if not isinstance(missing, bool):
            raise FeatureSpecError(f"feature {name!r}: 'missing' must be true or false")
        categories = _categories(name, cast(FeatureType, kind), data.get("categories"))
        return cls(name, cast(FeatureType, kind), missing, categories)


def parse_features(value: object) -> tuple[Feature, ...]:
    """The manifest's ``features``: names or feature objects, non-empty, names unique."""
    if value is None:
        raise FeatureSpecError("no 'features' list")
    if not isinstance(value, list) or not value:
        raise FeatureSpecError("'features' must be a non-empty list of names")
    features = tuple(Feature.parse(item) for item in value)
    names = [f.name for f in features]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FeatureSpecError(f"duplicate features: {', '.join(duplicates)}")
    return features


def plain_numbers(features: Sequence[Feature]) -> bool:
    """Every feature a number that is never missing: the float64 fast path applies."""
    return all(f.type == "number" and not f.missing and f.categories is None for f in features)


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise FeatureSpecError("every entry of 'features' must be a non-empty string")
    return value


def _categories(name: str, kind: FeatureType, value: object) -> tuple[Category, ...] | None:
    if value is None:
        return None
    if kind not in ("string", "integer"):
        raise FeatureSpecError(f"feature {name!r}: only string and integer features have "
                               "categories")
    want = str if kind == "string" else int
    if not isinstance(value, list) or not value or not all(type(v) is want for v in value):
        raise FeatureSpecError(f"feature {name!r}: 'categories' must be a non-empty list "
                               f"of {'strings' if want is str else 'integers'}")
    return tuple(value)


def is_missing(value: object) -> bool:
    """None, a float NaN or pandas' NA: what a data frame means by a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return type(value).__name__ == "NAType"
