"""Feature statistics per segment value: the pipeline counts each value's events (scored
and refused alike) as a recount of that value's events alone; the buffer merges them per
interval, caps the values per interval into ``__other__``; the record round-trips and
follows its schema, and a record without segments still reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
from jsonschema import Draft202012Validator

from tests.unit.core.test_feature_stats import frame_bundle
from tests.unit.helpers import SCHEMAS
from worker.core.columns import build_columns
from worker.core.feature_counts import lenient
from worker.core.feature_stats import FeatureStats, StatsBuffer
from worker.core.pipeline import ScoringContext, score_batch
from worker.core.records import OTHER_SEGMENT
from worker.core.segment_counts import SegmentCounts


def test_each_segment_counts_as_a_recount_of_its_events(tmp_path: Path) -> None:
    ctx = ScoringContext(frame_bundle(tmp_path / "f"), segment_fields=("market", "geo.zone"))
    assert ctx.layout is not None
    rng = np.random.default_rng(5)
    events = [{"id": f"e{i}", "amount": None if i % 7 == 0 else float(rng.normal(50, 30)),
               "country": str(rng.choice(["de", "fr", "xx"])),
               "market": ["DE", "FR", "IT"][i % 3], "geo": {"zone": "eu"} if i % 2 else {}}
              for i in range(300)]
    for e in events[::25]:
        e["amount"] = "a lot"  # refused by the model: counted leniently, in its segment
    scored = score_batch([orjson.dumps(e) for e in events], ctx, 1_000, count=True)
    specs = lenient(ctx.bundle.manifest.feature_specs)
    amended = [{**e, "amount": None if isinstance(e["amount"], str) else e["amount"]}
               for e in events]

    def recount(rows: list[dict[str, object]]) -> list[int]:
        return ctx.layout.count(build_columns(rows, specs)[0]).tolist()  # type: ignore[union-attr]

    got: dict[tuple[str, str], tuple[int, np.ndarray]] = {}
    for seg in scored.segment_counts:
        for value, n, counts in zip(seg.values, seg.rows.tolist(), seg.counts, strict=True):
            rows, sums = got.get((seg.field, value), (0, 0))
            got[(seg.field, value)] = (rows + n, sums + counts)
    assert set(got) == {("market", "DE"), ("market", "FR"), ("market", "IT"),
                        ("geo.zone", "eu")}
    for (field, value), (n, counts) in got.items():
        mine = [a for a, e in zip(amended, events, strict=True)
                if (e["market"] if field == "market" else e["geo"].get("zone")) == value]
        assert n == len(mine) and counts.tolist() == recount(mine), (field, value)
    assert scored.feature_counts is not None and scored.counted == 300
    assert scored.feature_counts.tolist() == recount(amended)


def seg(field: str, values: list[str], size: int = 2) -> SegmentCounts:
    n = len(values)
    return SegmentCounts(field, tuple(values), np.arange(1, n + 1, dtype=np.int64),
                         np.arange(n * size, dtype=np.int64).reshape(n, size))


def test_the_buffer_caps_values_per_interval_into_other_and_the_record_reads_back() -> None:
    buffer = StatsBuffer("w", interval_ms=60_000, segment_values=2)
    total = np.array([9, 9], dtype=np.int64)
    buffer.add("m", "1", "0123456789abcdef", total, 9, 0, (seg("c", ["a", "b"]),))
    assert len(buffer.take()[0].segments) == 2  # a delivery unit goes out mid-interval
    buffer.add("m", "1", "0123456789abcdef", total, 9, 1, (seg("c", ["a", "c", "d"]),))
    record = buffer.take()[0]
    assert [(s.value, s.rows, s.counts) for s in record.segments] == [
        (OTHER_SEGMENT, 2 + 3, (2 + 4, 3 + 5)), ("a", 1, (0, 1))]  # c and d: past the cap
    buffer.add("m", "1", "0123456789abcdef", total, 9, 60_000, (seg("c", ["d"]),))
    assert [s.value for s in buffer.take()[0].segments] == ["d"]  # a new interval
    assert list(buffer.admitted) == [("m", "1", 60_000, "c")]  # the past one forgotten
    schema = Draft202012Validator(orjson.loads(
        (SCHEMAS / "feature_stats.schema.json").read_bytes()))
    schema.validate(orjson.loads(record.encode()))
    assert FeatureStats.decode(record.encode()) == record
    plain = orjson.loads(record.encode())
    del plain["segments"]
    assert FeatureStats.decode(orjson.dumps(plain)).segments == ()
    no_segments = FeatureStats("m", "1", "w", 0, 1, "0123456789abcdef", 1, (1,))
    assert b"segments" not in no_segments.encode()  # records as before without segments
