"""Feature statistics on the real broker: under exactly-once, the committed statistics
records of a worker killed with SIGKILL mid-stream add up to a numpy recount of the
scored events, slot by slot, overall and per segment value (``--segment-fields hour``:
24 values); under at-least-once they add up at least to it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from jsonschema import Draft202012Validator

from tests.integration.faults import Feeder, read_keys
from tests.integration.helpers import WorkerProc
from tests.integration.test_exactly_once import worker_args
from tests.unit.helpers import SCHEMAS
from worker.core.columns import build_columns
from worker.core.feature_counts import CountLayout
from worker.core.feature_stats import FeatureStats
from worker.devtools.demo import make_events, train_demo
from worker.model.bundle import load_bundle

TopicFactory = Callable[..., str]
EVENTS, BAD_EVERY = 12_000, 250


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=3, n=20_000)


def read_stats(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[FeatureStats]:
    """Every committed statistics record: read up to the end offset each partition had
    when the workers were stopped (a quiet period is no proof on a loaded machine)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"stats-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out, deadline = [], time.monotonic() + timeout_s
    schema = Draft202012Validator(orjson.loads(
        (SCHEMAS / "feature_stats.schema.json").read_bytes()))
    while any(tp.offset < ends[tp.partition] for tp in c.position(
            [TopicPartition(topic, p) for p in parts])):
        assert time.monotonic() < deadline, f"statistics not read to their end in {timeout_s}s"
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                schema.validate(orjson.loads(m.value()))
                out.append(FeatureStats.decode(m.value() or b""))
    c.close()
    return out


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_statistics_equal_a_recount_across_a_kill9(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, guarantee: str, report: Callable[[str], None],
) -> None:
    topics = {"in": topic_factory("in", 4), "out": topic_factory("out", 4),
              "dlq": topic_factory("dlq", 1), "stats": topic_factory("stats", 1)}
    group = group_factory()
    args = [*worker_args(kafka_bootstrap, topics, group, bundle_dir, guarantee, f"fs-{group}"),
            "--feature-stats-topic", topics["stats"], "--feature-stats-interval-ms", "1000",
            "--segment-fields", "hour"]
    feeder = Feeder(kafka_bootstrap, topics["in"], EVENTS, rate=1500, bad_every=BAD_EVERY)
    w = WorkerProc(args, tmp_path / "w0.log")
    feeder.start()
    # Killed mid-stream: after a few thousand outputs are visible, while more arrive.
    read_keys(kafka_bootstrap, [topics["out"], topics["dlq"]], 3000,
              committed_only=guarantee == "exactly-once", timeout=120, settle=0)
    assert w.stop(signal.SIGKILL) == -signal.SIGKILL
    w = WorkerProc(args, tmp_path / "w1.log")
    feeder.join()
    try:
        read_keys(kafka_bootstrap, [topics["out"], topics["dlq"]], EVENTS, committed_only=True,
                  timeout=180, settle=0, distinct=True)  # replays must not stand in
    finally:
        assert w.stop(signal.SIGTERM) == 0, w.output()[-3000:]
    records = read_stats(kafka_bootstrap, topics["stats"])
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest.profile is not None
    layout = CountLayout.of(bundle.manifest.profile)
    events, _ = make_events(np.random.default_rng(1), EVENTS, 0, 1_790_000_000_000)
    good = [e for i, e in enumerate(events) if i % BAD_EVERY != BAD_EVERY - 1]
    expected = layout.count(build_columns(good, bundle.manifest.feature_specs)[0])
    total = sum((np.array(r.counts) for r in records), layout.zeros())
    rows = sum(r.rows for r in records)
    assert {(r.model, r.model_version, r.profile) for r in records} == {
        (bundle.name, bundle.version, bundle.manifest.profile.digest())}
    report(f"feature statistics, {guarantee}, one kill -9: {len(records)} records for "
           f"{len(good)} scored events; counted {rows}")
    if guarantee == "exactly-once":
        assert rows == len(good)
        assert total.tolist() == expected.tolist()
        per_hour: dict[str, np.ndarray] = {}
        for r in records:
            for seg in r.segments:
                per_hour[seg.value] = per_hour.get(seg.value, layout.zeros()) + seg.counts
        hours = sorted({str(e["hour"]) for e in good})
        assert sorted(per_hour) == hours
        for hour in hours:
            mine = [e for e in good if str(e["hour"]) == hour]
            recount = layout.count(build_columns(mine, bundle.manifest.feature_specs)[0])
            assert per_hour[hour].tolist() == recount.tolist(), hour
    else:  # a kill -9 repeats what was scored after the last commit: never fewer
        assert rows >= len(good) and (total >= expected).all()
