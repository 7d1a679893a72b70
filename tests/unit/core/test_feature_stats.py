"""The scoring pipeline counts the features of every event that decoded into an object,
scored or dead-lettered (a refused value counts as missing), and the statistics record:
merged per model, version and interval, valid against its schema, read back strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from jsonschema import Draft202012Validator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from tests.unit.helpers import SCHEMAS, event, logistic, save, training_data
from worker.core.columns import build_columns
from worker.core.feature_stats import FeatureStats, StatsBuffer, StatsError
from worker.core.pipeline import Prediction, ScoringContext, score_batch
from worker.core.schema import EventValidator
from worker.errors import Rejection
from worker.model.bundle import load_bundle
from worker.model.writer import write_bundle


def frame_bundle(folder: Path) -> Any:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"amount": rng.normal(50, 10, 400),
                          "country": rng.choice(["de", "fr", "it"], 400)})
    frame.loc[::9, "amount"] = np.nan
    model = make_pipeline(ColumnTransformer([
        ("num", SimpleImputer(), ["amount"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["country"])]), LogisticRegression())
    model.fit(frame, (rng.random(400) < 0.3).astype(int))
    return load_bundle(write_bundle(folder, model, name="f", version="3", task="binary",
                                    sample=frame, reference=frame))


def test_typed_batches_count_every_decoded_event(tmp_path: Path) -> None:
    ctx = ScoringContext(frame_bundle(tmp_path / "f"))
    assert ctx.layout is not None
    events = [{"id": f"e{i}", "amount": None if i % 4 == 0 else 500.0 + i,
               "country": "xx" if i % 5 == 0 else "de"} for i in range(40)]
    events.append({"id": "bad", "amount": "a lot", "country": "de"})  # a dead letter
    values = [orjson.dumps(e) for e in events] + [b"{not json"]  # no fields: not counted
    scored = score_batch(values, ctx, 1_000, count=True)
    assert sum(isinstance(o, Prediction) for o in scored.outcomes) == 40
    assert scored.counted == 41
    amended = [*events[:40], {"id": "bad", "amount": None, "country": "de"}]
    columns, _ = build_columns(amended, ctx.bundle.manifest.feature_specs)
    assert scored.feature_counts is not None
    assert scored.feature_counts.tolist() == ctx.layout.count(columns).tolist()
    amount, country = ctx.layout.features
    counts = scored.feature_counts.tolist()
    assert counts[amount.stop - 3 : amount.stop] == [11, 0, 30]  # missing, below, above
    assert counts[country.stop - 2 : country.stop] == [8, 0]  # other (unseen), missing
    assert score_batch([orjson.dumps(e) for e in events], ctx, 1_000).feature_counts is None


def test_the_fast_path_counts_its_matrix_and_no_profile_counts_nothing(tmp_path: Path) -> None:
    x, _ = training_data(n=400)
    ctx = ScoringContext(load_bundle(save(tmp_path / "p", logistic(), reference=x)))
    events = [event(i) for i in range(30)]
    scored = score_batch([orjson.dumps(e) for e in events], ctx, 1_000, count=True)
    matrix = np.array([[e[f] for f in ("a", "b", "c")] for e in events])
    assert ctx.layout is not None and scored.feature_counts is not None
    assert scored.feature_counts.tolist() == ctx.layout.count(matrix).tolist()
    bare = ScoringContext(load_bundle(save(tmp_path / "n", logistic())))
    assert bare.layout is None
    assert score_batch([orjson.dumps(event(0))], bare, 1, count=True).feature_counts is None


def test_events_the_model_refuses_count_with_the_refused_value_missing(
        tmp_path: Path) -> None:
    """The fast path refuses a null or a string where a number belongs, and the schema
    refuses an event before the features: all are dead letters, all are counted (the
    refused value as missing), so a feed that breaks a field shows in its missing rate."""
    x, _ = training_data(n=400)
    ctx = ScoringContext(load_bundle(save(tmp_path / "p", logistic(), reference=x)))
    events = [event(i) for i in range(30)]
    events[3]["b"] = None
    events[4]["c"] = "three"
    del events[5]["a"]
    events[6]["a"] = True  # a boolean is no number
    del events[7]["id"]  # no id: refused, its features still counted
    scored = score_batch([orjson.dumps(e) for e in events], ctx, 1_000, count=True)
    assert sum(isinstance(o, Rejection) for o in scored.outcomes) == 5
    matrix = np.array([[e.get(f) if type(e.get(f)) in (int, float) else np.nan
                        for f in ("a", "b", "c")] for e in events], dtype=np.float64)
    assert ctx.layout is not None and scored.feature_counts is not None
    assert scored.counted == 30
    assert scored.feature_counts.tolist() == ctx.layout.count(matrix).tolist()
    missing = [scored.feature_counts[s.stop - 3] for s in ctx.layout.features]
    assert missing == [2, 1, 1]
    schema = {"type": "object", "required": ["id", "a", "b", "c"],
              "properties": {"b": {"type": "number", "maximum": 100}}}
    strict = ScoringContext(ctx.bundle, validator=EventValidator(schema))
    events = [event(i) for i in range(10)]
    events[2]["b"] = 1000.0  # refused by the schema, counted as it is
    scored = score_batch([orjson.dumps(e) for e in events], strict, 1_000, count=True)
    assert isinstance(scored.outcomes[2], Rejection) and scored.counted == 10
    matrix = np.array([[e[f] for f in ("a", "b", "c")] for e in events], dtype=np.float64)
    assert scored.feature_counts is not None
    assert scored.feature_counts.tolist() == ctx.layout.count(matrix).tolist()


def test_the_buffer_merges_per_interval_and_the_record_follows_its_schema() -> None:
    buffer = StatsBuffer("w-1", interval_ms=60_000)
    one, two = np.array([1, 2, 0], dtype=np.int64), np.array([0, 1, 5], dtype=np.int64)
    buffer.add("m", "1", "0123456789abcdef", one, 3, now_ms=120_000)
    buffer.add("m", "1", "0123456789abcdef", two, 6, now_ms=179_999)
    buffer.add("m", "1", "0123456789abcdef", two, 6, now_ms=180_000)
    buffer.add("m", "1", "0123456789abcdef", two, 0, now_ms=240_000)  # nothing scored
    assert one.tolist() == [1, 2, 0]  # the caller's array is not merged into
    records = buffer.take()
    assert not buffer and [(r.interval_start, r.rows, r.counts) for r in records] == [
        (120_000, 9, (1, 3, 5)), (180_000, 6, (0, 1, 5))]
    schema = orjson.loads((SCHEMAS / "feature_stats.schema.json").read_bytes())
    for record in records:
        Draft202012Validator(schema).validate(orjson.loads(record.encode()))
        assert FeatureStats.decode(record.encode()) == record and record.key == b"m"
    buffer.add("m", "1", "0123456789abcdef", one, 3, now_ms=0)
    with pytest.raises(StatsError, match="two profiles"):
        buffer.add("m", "1", "fedcba9876543210", one, 3, now_ms=1)
    buffer.clear()
    assert buffer.take() == []


@pytest.mark.parametrize(("value", "problem"), [
    (b"{", "not JSON"), (b"[]", "JSON object"),
    (b'{"counts": [1, -1]}', "counts"),
    (b'{"counts": [], "model": ""}', "'model'"),
    (b'{"counts": [], "model": "m", "model_version": "1", "worker": "w", "interval_start": 0,'
     b' "interval_ms": 0}', "'interval_ms' must be an integer >= 1"),
])
def test_a_bad_record_is_one_line(value: bytes, problem: str) -> None:
    with pytest.raises(StatsError, match=problem):
        FeatureStats.decode(value)
