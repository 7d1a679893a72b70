"""``scoring-worker retrain`` on the real broker, without workers: a worse candidate is kept
and the decision record says why; the same range and seed give the same model; each bad
input ends with one line and exit status 2. (The whole loop with workers and the monitor
is test_retrain_loop.py.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from jsonschema import Draft202012Validator

from tests.integration.helpers import (
    ROOT,
    TRACED_LAUNCHER,
    WorkerProc,
    produce,
    read_topic,
    wait_for,
)
from worker.cli import main as cli_main
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.devtools.demo import DEMO_FEATURES, DEMO_MODEL_NAME, make_events, train_demo
from worker.errors import ConfigError
from worker.kafka_io.config import Connection, Role, client_config
from worker.kafka_io.ranges import RangeTooLarge, read_range
from worker.model.bundle import load_bundle
from worker.model.checked import load_checked
from worker.model.store import ModelStore, Pointer
from worker.retrain.job import RetrainRequest, run_retrain
from worker.retrain.policy import Policy
from worker.retrain.settings import RetrainSettings, TimeRange

T0 = 1_790_000_000_000  # the events' Kafka timestamps: T0 + i ms
#: T0 lies months back, beyond the broker's default retention (7 days): its next retention
#: check (every 5 min) would delete such records, so these topics keep them for good.
KEEP = {"retention.ms": "-1"}
TopicFactory = Callable[..., str]


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("champion") / "v1", n=100_000)


@pytest.fixture
def store(champion: Path, tmp_path: Path) -> ModelStore:
    s = ModelStore(tmp_path / "store")
    s.add(champion)
    s.promote(DEMO_MODEL_NAME, "1")
    return s


def feed(bootstrap: str, tx: str, labels: str | None, n: int, drifted: bool, seed: int = 5,
         label: Callable[[int], int] | None = None) -> list[dict[str, Any]]:
    """Demo events stamped T0 + i ms (and their labels, unless ``labels`` is None)."""
    events, truth = make_events(np.random.default_rng(seed), n, 0, T0, drifted=drifted)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i, (e, y) in enumerate(zip(events, truth, strict=True)):
        p.produce(tx, orjson.dumps(e), e["card_id"].encode(), timestamp=T0 + i)
        if labels is not None:
            value = {"id": e["id"], "label": y if label is None else label(i)}
            p.produce(labels, orjson.dumps(value), e["id"].encode(), timestamp=T0 + n + i)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return events


def settings(bootstrap: str, store: ModelStore, t: dict[str, str], **kw: Any) -> RetrainSettings:
    return RetrainSettings(bootstrap=bootstrap, model=str(store.folder(DEMO_MODEL_NAME)),
                           input_topic=t["tx"], labels_topic=t["labels"],
                           alerts_topic=t.get("alerts", "none"), **kw)


def cli(s: RetrainSettings, *args: str,
        launcher: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``launcher``: a script run instead of ``-m worker`` (it calls worker.cli.main)."""
    flags = ["--bootstrap", s.bootstrap, "--model", s.model, "--input-topic", s.input_topic,
             "--labels-topic", s.labels_topic, "--alerts-topic", s.alerts_topic]
    if s.control_topic:
        flags += ["--control-topic", s.control_topic]
    start = [str(launcher)] if launcher is not None else ["-m", "worker"]
    return subprocess.run([sys.executable, *start, "retrain", *flags, *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture
def topics(topic_factory: TopicFactory) -> Iterator[dict[str, str]]:
    yield {"tx": topic_factory("tx", 2, KEEP), "labels": topic_factory("labels", 2, KEEP),
           "alerts": topic_factory("alerts", 1),
           "ctl": topic_factory("ctl", 1, {"cleanup.policy": "compact"})}


def test_a_worse_candidate_is_not_promoted_and_the_record_says_why(
    kafka_bootstrap: str, topics: dict[str, str], store: ModelStore,
    report: Callable[[str], None], tmp_path: Path,
) -> None:
    # Healthy traffic: the champion (100,000 rows) is near the best a linear model does;
    # a candidate fit on 8,400 of these rows cannot beat it by the policy's margin.
    feed(kafka_bootstrap, topics["tx"], topics["labels"], 12_000, drifted=False)
    s = settings(kafka_bootstrap, store, topics, control_topic=topics["ctl"])
    launcher = tmp_path / "traced.py"  # under the OpenTelemetry SDK, with --tracing
    launcher.write_text(TRACED_LAUNCHER)
    done = cli(s, "--from", str(T0), "--to", str(T0 + 12_000), "--promote-if-better",
               "--tracing", "true", launcher=launcher)
    assert done.returncode == 0, done.stderr
    assert "keep the champion: roc_auc" in done.stdout and "action: kept" in done.stdout
    report("retrain, worse candidate: " + done.stdout.splitlines()[-2][:160])
    [record] = read_topic(kafka_bootstrap, topics["alerts"], 1, settle=0.5)
    decision = orjson.loads(record.value or b"")
    schema = orjson.loads((ROOT / "schemas/model_decision.schema.json").read_bytes())
    Draft202012Validator(schema).validate(decision)
    assert record.key == f"model_decision|{DEMO_MODEL_NAME}|2".encode()
    assert len(record.headers["traceparent"].split("-")) == 4  # its span's trace context
    assert decision["action"] == "kept" and not decision["policy_passed"]
    assert any(r.startswith("roc_auc ") and " < champion " in r for r in decision["reasons"])
    assert decision["candidate"]["roc_auc"] < decision["champion"]["roc_auc"] + 0.005
    assert store.current(DEMO_MODEL_NAME).name == "1"  # the champion still serves
    assert load_bundle(store.version_path(DEMO_MODEL_NAME, "2")).manifest.lineage is not None
    assert read_topic(kafka_bootstrap, topics["ctl"], 0, timeout=3, settle=0.5) == []


def self_test_scores(path: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The bundle's self-test events (holdout rows, written by ``write_bundle``) and the
    bundle's scores for them through the stream's pipeline."""
    bundle = load_checked(path)
    own = bundle.manifest.self_test
    assert own is not None and len(own.events) == 64
    events = list(own.events)
    outcomes = score_values([orjson.dumps(e) for e in events], ScoringContext(bundle), 0)
    assert all(isinstance(o, Prediction) for o in outcomes)
    return events, np.array([o.record["score"] for o in outcomes if isinstance(o, Prediction)])


def test_the_same_range_and_seed_give_the_same_candidate(
    kafka_bootstrap: str, topics: dict[str, str], store: ModelStore,
) -> None:
    events = feed(kafka_bootstrap, topics["tx"], topics["labels"], 12_000, drifted=True)
    s = settings(kafka_bootstrap, store, topics, seed=7)
    window = TimeRange(T0, T0 + 12_000)
    first = run_retrain(RetrainRequest(s, Policy(), window), T0 + 60_000)
    second = run_retrain(RetrainRequest(s, Policy(), window), T0 + 60_000)
    assert (first.compared.candidate_version, second.compared.candidate_version) == ("2", "3")
    assert first.compared.candidate == second.compared.candidate  # every holdout figure
    sample_one, one = self_test_scores(Path(first.candidate_at))
    sample_two, two = self_test_scores(Path(second.candidate_at))
    assert sample_one == sample_two  # the same holdout rows
    assert one.tobytes() == two.tobytes()  # bit-identical
    # The sample is holdout rows: the newest 30 % of the range, as the worker read them.
    holdout = {tuple(e[f] for f in DEMO_FEATURES) for e in events[8_400:]}
    assert all(tuple(e[f] for f in DEMO_FEATURES) in holdout for e in sample_one)
    assert first.counts == second.counts and first.counts["labeled"] == 12_000


@pytest.mark.parametrize("case", ["empty range", "no labels", "one class"])
def test_bad_input_ends_with_one_line_and_exit_2(
    kafka_bootstrap: str, topics: dict[str, str], store: ModelStore, case: str,
) -> None:
    if case != "empty range":
        labels = None if case == "no labels" else topics["labels"]
        feed(kafka_bootstrap, topics["tx"], labels, 3_000, drifted=False, label=lambda i: 0)
    s = settings(kafka_bootstrap, store, topics)
    done = cli(s, "--from", str(T0), "--to", str(T0 + 3_000), "--promote-if-better")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoring-worker retrain: error: "), lines
    want = {"empty range": "no events in", "no labels": "no labeled rows",
            "one class": "one class only"}[case]
    assert want in lines[0]
    assert [v.version for v in store.list()] == ["1"]  # nothing written


def test_shadow_makes_the_candidate_every_workers_shadow_model(
    kafka_bootstrap: str, topics: dict[str, str], topic_factory: TopicFactory,
    group_factory: Callable[[], str], store: ModelStore, tmp_path: Path,
) -> None:
    feed(kafka_bootstrap, topics["tx"], topics["labels"], 12_000, drifted=True)
    t = {"in": topic_factory("in", 2), "out": topic_factory("out", 2),
         "shadow": topic_factory("shadow", 2), "dlq": topic_factory("dlq", 1)}
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"],
                    "--shadow-topic", t["shadow"], "--group", group_factory(),
                    "--model", str(store.folder(DEMO_MODEL_NAME)),
                    "--control-topic", topics["ctl"], "--alerts-topic", topics["alerts"],
                    "--model-poll-ms", "200", "--metrics-port", "0"],
                   tmp_path / "worker.log")
    try:
        s = settings(kafka_bootstrap, store, topics, control_topic=topics["ctl"])
        done = cli(s, "--from", str(T0), "--to", str(T0 + 12_000), "--shadow")
        assert done.returncode == 0, done.stderr
        assert "action: candidate 2 is now the workers' shadow model (shadow sequence 1)" \
            in done.stdout
        wait_for(lambda: "shadow model set" in w.output(), 60, "the worker's shadow model")
        events, _ = make_events(np.random.default_rng(9), 500, 0, T0)
        produce(kafka_bootstrap, t["in"], ((e["card_id"].encode(), orjson.dumps(e))
                                           for e in events))
        main = read_topic(kafka_bootstrap, t["out"], len(events), settle=0.5)
        shadow = read_topic(kafka_bootstrap, t["shadow"], len(events), settle=0.5)
        # The same path by hand: `models shadow --stop` takes the next shadow sequence.
        assert cli_main(["models", "shadow", "--store", str(store.root), DEMO_MODEL_NAME,
                         "--stop", "--control-topic", topics["ctl"], "--bootstrap",
                         kafka_bootstrap]) == 0
        wait_for(lambda: "shadow model stopped" in w.output(), 60, "the shadow to stop")
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    assert {orjson.loads(p.value or b"")["model_version"] for p in main} == {"1"}
    assert {orjson.loads(p.value or b"")["model_version"] for p in shadow} == {"2"}
    assert len(main) == len(shadow) == len(events)
    assert store.current(DEMO_MODEL_NAME).name == "1"  # shadowing promotes nothing
    [decision] = read_topic(kafka_bootstrap, topics["alerts"], 1, settle=0.5)
    assert orjson.loads(decision.value or b"")["action"] == "shadowed"
    assert orjson.loads(decision.value or b"")["sequence"] == 1
    control = [orjson.loads(r.value or b"") for r in
               read_topic(kafka_bootstrap, topics["ctl"], 2, settle=0.5)]
    assert control == [{"name": DEMO_MODEL_NAME, "shadow": "2", "sequence": 1},
                       {"name": DEMO_MODEL_NAME, "shadow": None, "sequence": 2}]


def test_a_promotion_takes_the_next_sequence_above_the_control_topics(
    kafka_bootstrap: str, topics: dict[str, str], store: ModelStore,
) -> None:
    """retrain --promote-if-better promotes as `models promote --control-topic` does: the
    pointer and the control record get one sequence, above any already published."""
    feed(kafka_bootstrap, topics["tx"], topics["labels"], 12_000, drifted=True)
    # Another host published version 1 with sequence 5 (the store here is at 1).
    produce(kafka_bootstrap, topics["ctl"], [(DEMO_MODEL_NAME.encode(), orjson.dumps(
        {"name": DEMO_MODEL_NAME, "version": "1", "sequence": 5}))])
    s = settings(kafka_bootstrap, store, topics, control_topic=topics["ctl"])
    done = cli(s, "--from", str(T0), "--to", str(T0 + 12_000), "--promote-if-better")
    assert done.returncode == 0, done.stderr
    assert f"action: promoted {DEMO_MODEL_NAME} 2 (sequence 6" in done.stdout
    assert store.pointer(DEMO_MODEL_NAME) == Pointer("2", 6)
    records = read_topic(kafka_bootstrap, topics["ctl"], 2, settle=0.5)
    assert records[-1].key == DEMO_MODEL_NAME.encode()
    assert orjson.loads(records[-1].value or b"") == {"name": DEMO_MODEL_NAME, "version": "2",
                                                      "sequence": 6}
    [decision] = read_topic(kafka_bootstrap, topics["alerts"], 1, settle=0.5)
    assert orjson.loads(decision.value or b"")["sequence"] == 6


def test_a_time_range_is_read_by_the_time_index_and_filtered_by_timestamp(
    kafka_bootstrap: str, topic_factory: TopicFactory,
) -> None:
    topic = topic_factory("range", 2, KEEP)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    stamps = {0: [T0 + 100, T0 + 200, T0 + 150, T0 + 300, T0 + 400], 1: [T0 + 170, T0 + 250]}
    for part, ts in stamps.items():
        for k, t in enumerate(ts):
            p.produce(topic, f"{part}-{k}".encode(), partition=part, timestamp=t)
    assert p.flush(30) == 0
    conf = client_config(Role.RANGE, Connection(kafka_bootstrap))
    got = read_range(conf, topic, T0 + 160, T0 + 300, 30.0, 100)
    # Partition 0 is read from offset 1 (the first stamp >= start) to offset 3 (the first
    # >= end); its out-of-order 150 at offset 2 is before the range and left out.
    assert [(r.timestamp_ms - T0, r.value) for r in got] == [(170, b"1-0"), (200, b"0-1"),
                                                            (250, b"1-1")]
    assert read_range(conf, topic, T0 + 500, T0 + 600, 30.0, 100) == []
    with pytest.raises(RangeTooLarge):
        read_range(conf, topic, T0, T0 + 1000, 30.0, 5)
    with pytest.raises(ConfigError, match="does not exist"):
        read_range(conf, topic + "-missing", T0, T0 + 1000, 10.0, 5)
