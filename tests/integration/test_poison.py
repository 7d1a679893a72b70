"""Poison pills on the real broker: records whose outputs cannot be produced become
fitted dead letters (too_large, undeliverable), or are dropped and committed when even
that fails; the worker never crashes or stops advancing, across a kill -9 too."""

from __future__ import annotations

import hashlib
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from jsonschema import Draft202012Validator

from tests.integration.helpers import ROOT, WorkerProc, read_topic, wait_for
from worker.devtools.demo import make_events, train_demo
from worker.devtools.demo_run import free_port

TopicFactory = Callable[..., str]
BIG_TOPIC = {"max.message.bytes": "10485760"}
DLQ_SCHEMA = Draft202012Validator(orjson.loads((ROOT / "schemas" / "dead_letter.schema.json")
                                               .read_bytes()))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=3, n=20_000)


def args(bootstrap: str, t_in: str, t_out: str, t_dlq: str, group: str, model: Path,
         *extra: str) -> list[str]:
    return ["--bootstrap", bootstrap, "--input-topic", t_in, "--output-topic", t_out,
            "--dlq-topic", t_dlq, "--group", group, "--model", str(model),
            "--schema", str(ROOT / "schemas" / "transaction.schema.json"), *extra]


def produce(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000,
                  "linger.ms": 5})
    for key, value in items:
        p.produce(topic, value, key)
        p.poll(0)
    assert p.flush(60) == 0


def poison_pills() -> list[tuple[bytes, bytes]]:
    """1.04 MB and 5 MB records, each invalid (not JSON) and valid (a long id)."""
    good = make_events(np.random.default_rng(2), 1, 0, 1_790_000_000_000)[0][0]
    out = []
    for size in (1_040_000, 5_000_000):
        out.append((f"bad-{size}".encode(), b'{"id": "' + b"x" * size))
        valid = orjson.dumps({**good, "id": "y" * size})
        out.append((f"valid-{size}".encode(), valid))
    return out


def good_events(start: int, n: int) -> list[tuple[bytes, bytes]]:
    events = make_events(np.random.default_rng(start), n, start, 1_790_000_000_000)[0]
    return [(e["id"].encode(), orjson.dumps(e)) for e in events]


def test_large_records_become_fitted_dead_letters_across_a_kill(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, report: Callable[[str], None],
) -> None:
    t_in = topic_factory("in", 1, BIG_TOPIC)
    t_out, t_dlq = topic_factory("out", 1), topic_factory("dlq", 1)
    pills = poison_pills()
    sent = good_events(0, 200) + pills[:2] + good_events(1000, 2000) + pills[2:] + \
        good_events(5000, 2000)
    produce(kafka_bootstrap, t_in, sent)
    a = args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir, "--metrics-port",
             "0", "--batch-max", "100")
    first = WorkerProc(a, tmp_path / "first.log")
    wait_for(lambda: len(read_topic(kafka_bootstrap, t_dlq, 2, timeout=2, settle=0)) >= 2, 90,
             "the first two big records dead-lettered")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    second = WorkerProc(a, tmp_path / "second.log")
    try:
        preds = read_topic(kafka_bootstrap, t_out, 4200, timeout=120)
        dead = read_topic(kafka_bootstrap, t_dlq, 4, timeout=30)
    finally:
        assert second.stop() == 0, second.output()
    pred_keys = {p.key for p in preds}
    assert pred_keys == {k for k, _ in sent if not k.startswith((b"bad", b"valid"))}
    by_key = {d.key: d for d in dead}
    assert set(by_key) == {k for k, _ in pills}
    for key, value in pills:
        d = by_key[key]
        DLQ_SCHEMA.validate(d.headers)
        assert d.headers["dlq.error.kind"] == "too_large", d.headers
        assert d.headers["dlq.original.length"] == str(len(value))
        assert d.headers["dlq.original.sha256"] == hashlib.sha256(value).hexdigest()
        assert d.headers["dlq.original.truncated"] == "true"
        assert d.value is not None and value.startswith(d.value) and len(d.value) < 1_000_000
    for log in (first.output(), second.output()):
        assert "Traceback" not in log
    report(f"poison pills (1.04 MB, 5 MB; valid and invalid) across a kill -9: "
           f"{len(sent)} in, {len(pred_keys)} predicted, {len(by_key)} too_large dead letters, "
           f"0 lost, {len(preds) - len(pred_keys)} duplicate predictions, 0 crashes")


def committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = c.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        c.close()


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    prefix = f"{name}{{{labels}}} " if labels else name
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix) and not line.startswith(name + "_"))


def test_keyless_outputs_for_compacted_topics_are_dead_lettered_or_dropped(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, report: Callable[[str], None],
) -> None:
    # A compacted topic refuses records without a key (INVALID_RECORD, and with them the
    # rest of their record batch); the worker sees that at start and never sends them.
    compact = {"cleanup.policy": "compact"}
    t_in = topic_factory("in", 1)
    t_out, t_dlq = topic_factory("out", 1, compact), topic_factory("dlq", 1, compact)
    items: list[tuple[bytes | None, bytes]] = []
    for i, (key, value) in enumerate(good_events(0, 600)):
        if i in (100, 300, 500):
            items.append((None, value))  # no prediction, and no dead letter can carry it
        elif i in (200, 400):
            items.append((key, value[:-5]))  # a plain dead letter (keyed: accepted)
        else:
            items.append((key, value))
    produce(kafka_bootstrap, t_in, items)  # type: ignore[arg-type]
    port, group = free_port(), group_factory()
    w = WorkerProc(args(kafka_bootstrap, t_in, t_out, t_dlq, group, bundle_dir, "--metrics-port",
                        str(port), "--batch-max", "50"), tmp_path / "w.log")
    try:
        wait_for(lambda: committed(kafka_bootstrap, group, t_in) == len(items), 90,
                 "every input offset committed")
        dropped = metric(port, "scoring_outputs_dropped_total")
        preds = read_topic(kafka_bootstrap, t_out, 595, timeout=30)
        dead = read_topic(kafka_bootstrap, t_dlq, 2, timeout=30)
    finally:
        assert w.stop() == 0, w.output()
    assert len({p.key for p in preds}) == 595
    assert {d.headers["dlq.error.kind"] for d in dead} == {"decode"} and len(dead) == 2
    log = w.output()
    assert dropped == 3 and log.count("dropped: no output accepts it") == 3
    assert "Traceback" not in log
    report(f"compacted outputs: 3 keyless records dropped (counted, logged once each) and "
           f"committed; {len(preds)} predictions, 2 dead letters")


def lower_limit(bootstrap: str, topic: str, max_bytes: int) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(max_bytes),
                    incremental_operation=AlterConfigOpType.SET)])
    client = AdminClient({"bootstrap.servers": bootstrap})  # alive until the result came
    for fut in client.incremental_alter_configs([res]).values():
        fut.result(30)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_records_the_broker_refuses_become_dead_letters_and_batch_mates_survive(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, guarantee: str, report: Callable[[str], None],
) -> None:
    # The dead-letter topic's limit drops below what the start-up check saw: the broker
    # refuses whole record batches (MESSAGE_TOO_LARGE), innocent dead letters included.
    t_in, t_out, t_dlq = topic_factory("in", 1), topic_factory("out", 1), topic_factory("dlq", 1)
    port, group = free_port(), group_factory()
    extra = ["--metrics-port", str(port), "--batch-max", "200", "--guarantee", guarantee,
             "--instance-id", f"refused-{group}"]
    w = WorkerProc(args(kafka_bootstrap, t_in, t_out, t_dlq, group, bundle_dir, *extra),
                   tmp_path / "w.log")
    try:
        produce(kafka_bootstrap, t_in, good_events(0, 10))
        assert len(read_topic(kafka_bootstrap, t_out, 10, settle=0, committed_only=True)) >= 10
        lower_limit(kafka_bootstrap, t_dlq, 20_000)
        items: list[tuple[bytes, bytes]] = []
        for i, (key, value) in enumerate(good_events(100, 1000)):
            if i % 100 == 50:
                # its dead letter is too large now (random bytes: compression cannot help)
                items.append((key, b"{" + np.random.default_rng(i).bytes(50_000)))
            elif i % 100 in (48, 49, 51, 52):
                items.append((key, value[:-3]))  # small dead letters, in the same batches
            else:
                items.append((key, value))
        produce(kafka_bootstrap, t_in, items)
        wait_for(lambda: committed(kafka_bootstrap, group, t_in) == 1010, 120,
                 "every input offset committed")
        aborted = metric(port, "scoring_transactions_total", 'result="aborted"')
        preds = read_topic(kafka_bootstrap, t_out, 960, timeout=30, committed_only=True)
        dead = read_topic(kafka_bootstrap, t_dlq, 50, timeout=30, committed_only=True)
    finally:
        assert w.stop() == 0, w.output()
    kinds = {d.key: d.headers["dlq.error.kind"] for d in dead}
    big = {k for k, v in items if len(v) > 40_000}
    assert {k for k, kind in kinds.items() if kind == "too_large"} == big
    assert {k for k, kind in kinds.items() if kind == "decode"} == \
        {k for k, v in items if len(v) < 40_000 and not v.endswith(b"}")}
    assert {p.key for p in preds} >= {k for k, v in items if v.endswith(b"}")}
    if guarantee == "exactly-once":
        assert len(preds) == 960 and len(dead) == 50  # each once, nothing aborted visible
    for d in dead:
        if d.key in big:
            assert d.headers["dlq.original.truncated"] == "true" and len(d.value or b"") < 20_000
    assert "Traceback" not in w.output()
    report(f"{guarantee}: dead-letter topic limit lowered to 20 kB at run time: 10 too_large "
           f"(prefix + sha256), 40 batch-mates dead-lettered whole, {len(preds)} predictions, "
           f"{aborted:.0f} aborted transactions")
