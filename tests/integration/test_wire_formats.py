"""Avro, Protobuf and JSON Schema topics on the real broker, with the real registry
(registry-local's Apicurio) and confluent_kafka's own serializers as producers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from tests.conftest import start_registry
from tests.integration import wire
from tests.integration.helpers import (
    WorkerProc,
    free_ports,
    produce,
    read_topic,
    same_scores,
    wait_for,
)
from worker.devtools import registry_local
from worker.devtools.demo import train_demo

TopicFactory = Callable[..., str]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=3, n=20_000)


def test_the_same_events_in_every_format_score_bit_identically(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    url = schema_registry.url
    base = wire.events(150)
    # A subject each (<topic>-<format>-value): a registry keeps one schema type per subject.
    formats: dict[str, wire.Serialize] = {
        "json": orjson.dumps, "avro": wire.avro(url, f"{t_in}-avro"),
        "pb": wire.protobuf(url, f"{t_in}-pb"),
        "js": wire.json_schema(url, f"{t_in}-js")}
    sent = []
    for e in base:  # interleaved: one topic, --input-format auto
        sent += [(f"{f}-{e['id']}".encode(), ser({**e, "id": f"{f}-{e['id']}"}))
                 for f, ser in formats.items()]
    produce(kafka_bootstrap, t_in, sent)
    # One event per batch: a matrix of another shape may round a row an ulp apart (BLAS),
    # so only equal batches make "bit-identical" a fair claim.
    w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir,
                             url, "--input-format", "auto", "--batch-max", "1",
                             "--metrics-port", "0"), tmp_path / "w.log")
    try:
        got = wire.scores([o.value for o in read_topic(kafka_bootstrap, t_out, len(sent))])
    finally:
        assert w.stop() == 0, w.output()
    by_format = {f: {k[len(f) + 1:]: v for k, v in got.items() if k.startswith(f + "-")}
                 for f in formats}
    assert len(by_format["json"]) == len(base)
    for f in ("avro", "pb", "js"):
        assert by_format[f] == by_format["json"], (f, _reasons(kafka_bootstrap, t_dlq))
    assert read_topic(kafka_bootstrap, t_dlq, 0, timeout=3, settle=1) == []
    report(f"wire formats: {len(base)} events each as JSON, Avro, Protobuf and JSON Schema "
           "(confluent_kafka serializers, one topic, --input-format auto): identical scores")


def _reasons(bootstrap: str, topic: str) -> set[str]:
    return {d.headers["dlq.error.message"] for d in read_topic(bootstrap, topic, 1, timeout=5)}


def test_bad_wire_values_are_dead_letters_with_their_reason_and_bytes(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
) -> None:
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    url = schema_registry.url
    good = wire.keyed(wire.events(20), wire.avro(url, t_in))
    valid = good[0][1]
    bad = {b"no-magic": orjson.dumps(wire.events(1)[0]),
           b"unknown-id": b"\x00\x00\x0f\x42\x3f" + valid[5:],
           b"truncated": valid[:12],
           b"trailing": valid + b"\x00\x01",
           b"short": b"\x00\x00\x01"}
    produce(kafka_bootstrap, t_in, good[:10] + list(bad.items()) + good[10:])
    w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir,
                             url, "--input-format", "avro", "--metrics-port", "0"),
                   tmp_path / "w.log")
    try:
        preds = read_topic(kafka_bootstrap, t_out, len(good))
        dead = {d.key: d for d in read_topic(kafka_bootstrap, t_dlq, len(bad))}
    finally:
        assert w.stop() == 0, w.output()
    assert {p.key for p in preds} == {k for k, _ in good}
    assert set(dead) == set(bad)
    reasons = {k: d.headers["dlq.error.message"] for k, d in dead.items()}
    assert reasons[b"no-magic"].startswith("no magic byte")
    assert reasons[b"unknown-id"] == "unknown schema id 999999 (not in the schema registry)"
    assert "Avro payload does not match schema id" in reasons[b"truncated"]
    assert "2 bytes after the record" in reasons[b"trailing"]
    assert "shorter than its 5-byte header" in reasons[b"short"]
    for key, value in bad.items():
        assert dead[key].value == value  # the original bytes


def test_schema_evolution_v1_and_v2_interleaved_and_a_version_without_a_feature(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    url = schema_registry.url
    v1 = orjson.loads(wire.AVRO_SCHEMA)
    # v2: a field added with a default, a field removed that the model does not use.
    v2 = {**v1, "fields": [f for f in v1["fields"] if f["name"] != "card_id"]
          + [{"name": "channel", "type": "string", "default": "pos"}]}
    # v3: without `amount`, a feature of the model.
    v3 = {**v2, "fields": [f for f in v2["fields"] if f["name"] != "amount"]}
    ser = {n: wire.avro(url, t_in, orjson.dumps(s).decode()) for n, s in
           (("v1", v1), ("v2", v2), ("v3", v3))}
    sent: list[tuple[bytes, bytes]] = []
    for i, e in enumerate(wire.events(90)):
        version = ("v1", "v2", "v3")[i % 3]
        record = {k: v for k, v in e.items() if not (version != "v1" and k == "card_id")}
        if version == "v3":
            record.pop("amount")
        sent.append((f"{version}-{e['id']}".encode(), ser[version](record)))
    subject = SchemaRegistryClient({"url": url}).get_versions(f"{t_in}-value")
    assert subject == [1, 2, 3]
    produce(kafka_bootstrap, t_in, sent)
    w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir,
                             url, "--input-format", "avro", "--metrics-port", "0"),
                   tmp_path / "w.log")
    try:
        preds = read_topic(kafka_bootstrap, t_out, 60)
        dead = read_topic(kafka_bootstrap, t_dlq, 30)
    finally:
        assert w.stop() == 0, w.output()
    assert sorted(p.key for p in preds) == sorted(k for k, _ in sent if not k.startswith(b"v3"))
    assert sorted(d.key for d in dead) == sorted(k for k, _ in sent if k.startswith(b"v3"))
    assert {d.headers["dlq.error.message"] for d in dead} == {"feature 'amount' is missing"}
    report("schema evolution: v1 and v2 interleaved all scored (60), v3 without the feature "
           "'amount' dead-lettered naming it (30)")


def test_scores_match_json_through_the_stream_with_batches(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
) -> None:
    """Default batching, Avro alone against JSON alone: equal up to BLAS's last bits."""
    url = schema_registry.url
    base = wire.events(2000, seed=5)
    results = []
    for fmt, ser in (("json", orjson.dumps), ("avro", None)):
        t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
        serialize = ser or wire.avro(url, t_in)
        produce(kafka_bootstrap, t_in, wire.keyed(base, serialize))
        w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(),
                                 bundle_dir, url, "--input-format", fmt, "--metrics-port", "0"),
                       tmp_path / f"{fmt}.log")
        try:
            results.append(wire.scores([o.value for o in
                                        read_topic(kafka_bootstrap, t_out, len(base))]))
        finally:
            assert w.stop() == 0, w.output()
    assert len(results[0]) == len(base)
    assert same_scores(results[0], results[1])


def test_a_registry_outage_holds_the_stream_and_loses_nothing(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, tmp_path: Path, report: Callable[[str], None],
) -> None:
    """The registry paused (SIGSTOP) mid-stream for 20 s: the events naming a schema the
    worker has not fetched yet wait (/readyz 503), none is dead-lettered or lost.

    Paused, not killed: the test registry (Apicurio, in memory) forgets its schemas when it
    dies, and a worker that asks again between its restart and the test registering them
    anew rightly hears "unknown schema id" (CI saw that race); a real registry keeps them."""
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    r = start_registry(report, "outage test's own registry")  # its own: it gets paused
    v1 = orjson.loads(wire.AVRO_SCHEMA)
    v2 = {**v1, "fields": [*v1["fields"], {"name": "channel", "type": "string",
                                           "default": "pos"}]}
    texts = [wire.AVRO_SCHEMA, orjson.dumps(v2).decode()]
    first = wire.keyed(wire.events(300, seed=1), wire.avro(r.url, t_in, texts[0]))
    # Serialized while the registry is up; produced while it is down.
    second = wire.keyed(wire.events(300, seed=2), wire.avro(r.url, t_in, texts[1]))
    metrics_port = free_ports(1)
    w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir,
                             r.url, "--input-format", "avro", "--metrics-port",
                             str(metrics_port)), tmp_path / "w.log")
    try:
        produce(kafka_bootstrap, t_in, first)
        assert len(read_topic(kafka_bootstrap, t_out, len(first), settle=0)) >= len(first)
        wait_for(lambda: wire.readyz(metrics_port) == 200, 30, "/readyz 200")
        pid = registry_local.running_pid(r)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        produce(kafka_bootstrap, t_in, second)
        t0 = time.monotonic()
        wait_for(lambda: wire.readyz(metrics_port) == 503, 30, "/readyz 503 in the outage")
        statuses = set()
        while time.monotonic() - t0 < 20:
            statuses.add(wire.readyz(metrics_port))
            time.sleep(0.5)
        assert statuses == {503}
        assert len(read_topic(kafka_bootstrap, t_out, len(first) + 1, timeout=3, settle=0)) \
            == len(first)
        os.kill(pid, signal.SIGCONT)
        t1 = time.monotonic()
        wait_for(lambda: wire.readyz(metrics_port) == 200, 60, "/readyz 200 again")
        back = time.monotonic() - t1
        preds = read_topic(kafka_bootstrap, t_out, len(first) + len(second))
    finally:
        pid = registry_local.running_pid(r)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        assert w.stop() == 0, w.output()
        registry_local.stop(r)
    assert sorted({p.key for p in preds}) == sorted(k for k, _ in first + second)
    assert read_topic(kafka_bootstrap, t_dlq, 0, timeout=3, settle=1) == []
    assert "schema registry does not answer" in w.output()
    assert "Traceback" not in w.output()
    report(f"registry outage (paused 20 s, {len(second)} events waiting): /readyz 503 "
           f"throughout, 200 again {back:.1f}s after it resumed; 0 lost, 0 dead letters, "
           f"{len(preds) - len(first) - len(second)} duplicate predictions")


def test_exactly_once_with_avro_inputs(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
) -> None:
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    good = wire.keyed(wire.events(200, seed=4), wire.avro(schema_registry.url, t_in))
    unknown = (b"unknown", b"\x00\x00\x0f\x42\x3e" + good[0][1][5:])
    produce(kafka_bootstrap, t_in, [*good[:100], unknown, *good[100:]])
    w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir,
                             schema_registry.url, "--input-format", "avro", "--guarantee",
                             "exactly-once", "--instance-id", f"eos-{t_in}",
                             "--metrics-port", "0"), tmp_path / "w.log")
    try:
        preds = read_topic(kafka_bootstrap, t_out, len(good), committed_only=True)
        dead = read_topic(kafka_bootstrap, t_dlq, 1, committed_only=True)
    finally:
        assert w.stop() == 0, w.output()
    assert sorted(p.key for p in preds) == sorted(k for k, _ in good)
    assert [(d.key, d.value) for d in dead] == [unknown]
