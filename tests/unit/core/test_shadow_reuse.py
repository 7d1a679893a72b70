"""score_with_shadow: the shadow model scores the batch without a second decode, and gives
exactly what scoring the batch with it alone gives."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression

from tests.unit.helpers import FEATURES, event, logistic, training_data
from worker.core.decoders import Decoded
from worker.core.decoders.json import JsonDecoder
from worker.core.pipeline import (
    Prediction,
    ScoringContext,
    score_values,
    score_with_shadow,
)
from worker.core.schema import EventValidator
from worker.model.bundle import ModelBundle, load_bundle
from worker.model.writer import write_bundle


@dataclasses.dataclass
class CountingDecoder:
    inner: JsonDecoder = dataclasses.field(default_factory=JsonDecoder)
    calls: int = 0

    def decode(self, values: Sequence[bytes | None], limit: int) -> Decoded:
        self.calls += 1
        return self.inner.decode(values, limit)


@dataclasses.dataclass
class Recording:
    """A runtime that notes the inputs it was given."""

    inner: Any
    seen: list[Any] = dataclasses.field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, matrix: Any) -> Any:
        self.seen.append(matrix)
        return self.inner.predict(matrix)


def bundle_of(folder: Path, model: Any, version: str,
              features: tuple[str, ...] = FEATURES) -> ModelBundle:
    sample = training_data(n=64, width=len(features), seed=5)[0]
    return load_bundle(write_bundle(folder, model, name="unit", version=version, task="binary",
                                    features=features, sample=sample))


def recording(bundle: ModelBundle) -> ModelBundle:
    return dataclasses.replace(bundle, runtime=Recording(bundle.runtime))


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return bundle_of(tmp_path_factory.mktemp("main"), logistic(seed=0), "7")


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return bundle_of(tmp_path_factory.mktemp("second"), logistic(seed=3), "8")


def values() -> list[bytes | None]:
    good = [orjson.dumps(event(i)) for i in range(20)]
    bad = [b"not json", None, orjson.dumps({"id": "x", "a": "1", "b": 1.0, "c": 2.0}),
           orjson.dumps(event(99, d=5.0))]
    return [*good[:10], *bad, *good[10:]]


def payloads(outcomes: Sequence[Any]) -> list[Any]:
    return [o.payload if isinstance(o, Prediction) else o for o in outcomes]


def test_a_shadow_with_the_same_features_scores_the_same_matrix(
    main: ModelBundle, second: ModelBundle
) -> None:
    decoder = CountingDecoder()
    ctx = ScoringContext(recording(main), decoder=decoder)
    shadow = dataclasses.replace(ctx, bundle=recording(second))
    scored, got_shadow = score_with_shadow(values(), ctx, shadow, 5)
    got_main = scored.outcomes
    assert decoder.calls == 1
    seen = shadow.bundle.runtime.seen[0], ctx.bundle.runtime.seen[0]  # type: ignore[attr-defined]
    assert np.shares_memory(*seen)  # views of one matrix, built once
    assert payloads(got_main) == payloads(score_values(values(), ctx, 5))
    assert payloads(got_shadow) == payloads(score_values(values(), shadow, 5))
    assert {o.record["model_version"] for o in got_shadow if isinstance(o, Prediction)} == {"8"}


def test_a_shadow_with_other_features_builds_its_own_input_from_the_same_events(
    main: ModelBundle, tmp_path: Path
) -> None:
    x, y = training_data(width=2)
    other = bundle_of(tmp_path, LogisticRegression().fit(x, y), "9", ("c", "a"))
    decoder = CountingDecoder()
    ctx = ScoringContext(recording(main), decoder=decoder)
    shadow = dataclasses.replace(ctx, bundle=recording(other))
    scored, got_shadow = score_with_shadow(values(), ctx, shadow, 5)
    got_main = scored.outcomes
    assert decoder.calls == 1
    assert shadow.bundle.runtime.seen[0].shape[1] == 2  # type: ignore[attr-defined]
    assert payloads(got_main) == payloads(score_values(values(), ctx, 5))
    assert payloads(got_shadow) == payloads(score_values(values(), shadow, 5))
    np.testing.assert_array_equal(shadow.bundle.runtime.seen[0][:, 1],  # type: ignore[attr-defined]
                                  ctx.bundle.runtime.seen[0][:, 0])  # "a" in both


def test_a_shadow_that_decodes_otherwise_decodes_on_its_own(
    main: ModelBundle, second: ModelBundle
) -> None:
    schema = EventValidator({"type": "object", "properties": {"a": {"maximum": 0.5}}})
    ctx = ScoringContext(main)
    shadow = dataclasses.replace(ctx, bundle=second, validator=schema)
    scored, got_shadow = score_with_shadow(values(), ctx, shadow, 5)
    got_main = scored.outcomes
    assert payloads(got_main) == payloads(score_values(values(), ctx, 5))
    assert payloads(got_shadow) == payloads(score_values(values(), shadow, 5))
    assert payloads(got_shadow) != payloads(got_main)
