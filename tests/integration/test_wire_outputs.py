"""Predictions in the registry's formats (--output-format avro), read by others and by the
monitor; retrain reading Avro events; a registry that asks for credentials and a client
certificate; a schema that references another subject. All on the real broker and the real
registry (registry-local's Apicurio), with confluent_kafka's own serializers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.integration import wire
from tests.integration.helpers import ROOT, WorkerProc, produce, read_topic, same_scores
from tests.integration.registry_proxy import AuthProxy, self_signed
from tests.integration.test_monitor import MonitorProc, final_windows, stable
from tests.integration.test_retrain import KEEP, T0
from worker.api import score_records
from worker.core import decoders
from worker.core.decoders.wire import WireDecoder
from worker.core.pipeline import Prediction
from worker.devtools import registry_local
from worker.devtools.demo import DEMO_MODEL_NAME, make_events, train_demo
from worker.errors import ScoringError
from worker.kafka_io.registry import RegistryConnection, SchemaSource
from worker.model.bundle import load_bundle
from worker.model.store import ModelStore
from worker.retrain.job import RetrainRequest, run_retrain
from worker.retrain.policy import Policy
from worker.retrain.settings import RetrainSettings, TimeRange
from worker.stream.schema_gate import look_up

TopicFactory = Callable[..., str]
PREDICTION_AVSC = (ROOT / "schemas" / "prediction.avsc").read_text()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=5, n=5_000)


def labelled_events(n: int, seed: int) -> list[dict[str, Any]]:
    return [{**e, "label": i % 2} for i, e in enumerate(wire.events(n, seed=seed))]


def expected_scores(bundle_dir: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = score_records(load_bundle(bundle_dir), events)
    return {o.record["id"]: o.record["score"] for o in outcomes if isinstance(o, Prediction)}


def test_exactly_once_avro_predictions_read_with_confluents_deserializer(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    events = labelled_events(200, seed=6)
    bad = (b"bad", b"\x00\x00\x00\x00\x07 not an event")
    produce(kafka_bootstrap, t_in, [*((e["id"].encode(), orjson.dumps(e)) for e in events[:100]),
                                    bad, *((e["id"].encode(), orjson.dumps(e))
                                           for e in events[100:])])
    w = WorkerProc(wire.args(kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir,
                             schema_registry.url, "--output-format", "avro", "--guarantee",
                             "exactly-once", "--instance-id", f"eos-{t_in}", "--label-field",
                             "label", "--metrics-port", "0"), tmp_path / "w.log")
    try:
        preds = read_topic(kafka_bootstrap, t_out, len(events), committed_only=True)
        dead = read_topic(kafka_bootstrap, t_dlq, 1, committed_only=True)
    finally:
        assert w.stop() == 0, w.output()
    client = SchemaRegistryClient({"url": schema_registry.url})
    registered = client.get_latest_version(f"{t_out}-value")
    assert registered.schema.schema_type == "AVRO"
    deserialize = AvroDeserializer(client)  # the writer's schema, fetched by its id
    ctx = SerializationContext(t_out, MessageField.VALUE)
    got = {}
    for p in preds:
        assert (p.value or b"")[:5] == b"\x00" + registered.schema_id.to_bytes(4, "big")
        record = deserialize(p.value, ctx)
        assert record["id"].encode() == p.key and record["model"] == DEMO_MODEL_NAME
        assert record["true_label"] in (0, 1) and isinstance(record["event_ts"], int)
        got[record["id"]] = record["score"]
    assert len(preds) == len(events) and sorted(got) == sorted(e["id"] for e in events)
    assert same_scores(got, expected_scores(bundle_dir, events))
    assert [(d.key, d.value) for d in dead] == [bad]  # the original bytes, not Avro
    report(f"exactly-once, --output-format avro: {len(preds)} committed predictions read "
           f"with confluent_kafka's AvroDeserializer (schema id {registered.schema_id}); the "
           "dead letter keeps its original bytes")


def predictions(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(11)
    now = int(time.time() * 1000)
    start = (now - 20 * 60_000) // 300_000 * 300_000
    out = []
    for i in range(n):
        s = float(rng.random())
        p: dict[str, Any] = {"id": f"p-{i}", "score": s, "label": int(s >= 0.5),
                             "model": "fraud", "model_version": "1" if i % 3 else "2",
                             "event_ts": start + int(rng.integers(0, 600_000)),
                             "scored_at": now, "true_label": int(rng.random() < s)}
        out.append(p)
    return out


def wait_counts(bootstrap: str, topic: str, total: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = final_windows(bootstrap, topic)
        if sum(r["count"] for k, r in got.items() if "|5m|" in k) == total:
            return got
    raise AssertionError(f"windows incomplete: {got}")


def test_the_monitor_reads_avro_predictions_as_it_reads_json(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    schema_registry: registry_local.LocalRegistry, tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    preds = predictions(1500)
    runs = {}
    for fmt in ("json", "avro"):
        topics = {"pred": topic_factory(f"pred-{fmt}", 2), "labels": "",
                  "metrics": topic_factory(f"metrics-{fmt}"),
                  "alerts": topic_factory(f"alerts-{fmt}"), "stats": topic_factory(f"st-{fmt}")}
        if fmt == "json":
            values = [orjson.dumps(p) for p in preds]
        else:  # confluent_kafka's own serializer, with the schema file
            ser = AvroSerializer(SchemaRegistryClient({"url": schema_registry.url}),
                                 PREDICTION_AVSC)
            ctx = SerializationContext(topics["pred"], MessageField.VALUE)
            values = [bytes(ser(p, ctx) or b"") for p in preds]
        produce(kafka_bootstrap, topics["pred"],
                [(p["id"].encode(), v) for p, v in zip(preds, values, strict=True)])
        extra = [] if fmt == "json" else ["--prediction-format", "avro", "--schema-registry",
                                          schema_registry.url]
        runs[fmt] = (topics, MonitorProc(kafka_bootstrap, topics, group_factory(), fmt,
                                         tmp_path / f"{fmt}.log", extra=extra))
    windows = {}
    try:
        for fmt, (topics, _) in runs.items():
            windows[fmt] = wait_counts(kafka_bootstrap, topics["metrics"], len(preds), 120)
    finally:
        for fmt, (_, mon) in runs.items():
            assert mon.stop() == 0, (tmp_path / f"{fmt}.log").read_text()[-3000:]
    assert stable(windows["avro"]) == stable(windows["json"])
    assert len(windows["json"]) >= 4
    report(f"monitor: {len(preds)} predictions as Avro (confluent_kafka's serializer) and as "
           f"JSON give the same {len(windows['json'])} window records")


def test_a_registry_with_basic_auth_and_mutual_tls(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, schema_registry: registry_local.LocalRegistry, tmp_path: Path,
) -> None:
    server, client = self_signed(tmp_path, "server"), self_signed(tmp_path, "client")
    proxy = AuthProxy(f"http://127.0.0.1:{schema_registry.port}", "svc", "s3cret", server,
                      client_ca=client.cert)
    url = proxy.url(registry_local.CCOMPAT)
    t_in, t_out, t_dlq = topic_factory("in"), topic_factory("out"), topic_factory("dlq")
    events = labelled_events(30, seed=8)
    try:
        # The events' producer goes around the proxy: the worker's side is under test.
        produce(kafka_bootstrap, t_in, wire.keyed(events, wire.avro(schema_registry.url, t_in)))
        w = WorkerProc(wire.args(
            kafka_bootstrap, t_in, t_out, t_dlq, group_factory(), bundle_dir, url,
            "--input-format", "avro", "--output-format", "avro",
            "--schema-registry-user", "svc", "--schema-registry-password", "s3cret",
            "--schema-registry-ca", str(server.cert),
            "--schema-registry-cert", str(client.cert), "--schema-registry-key",
            str(client.key), "--metrics-port", "0"), tmp_path / "w.log")
        preds = read_topic(kafka_bootstrap, t_out, len(events))
        assert w.stop() == 0, w.output()
        assert len(preds) == len(events) and proxy.seen.authorized >= 2
        assert "s3cret" not in w.output() and '"schema_registry_password":"***"' in w.output()
        wrong = SchemaSource(RegistryConnection(url, "svc", "wrong", str(server.cert),
                                                str(client.cert), str(client.key)))
        with pytest.raises(ScoringError, match="401"):
            wrong.fetch(1)
        no_cert = SchemaSource(RegistryConnection(url, "svc", "s3cret", str(server.cert)))
        with pytest.raises(ScoringError):
            no_cert.fetch(1)
    finally:
        proxy.close()


def test_retrain_reads_avro_events_as_it_reads_json(
    kafka_bootstrap: str, topic_factory: TopicFactory,
    schema_registry: registry_local.LocalRegistry, tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path / "store")
    store.add(train_demo(tmp_path / "v1", n=5_000))
    store.promote(DEMO_MODEL_NAME, "1")
    events, truth = make_events(np.random.default_rng(12), 3_000, 0, T0, drifted=True)
    labels = topic_factory("labels", 1, KEEP)
    results = {}
    for fmt in ("json", "avro"):
        tx = topic_factory(f"tx-{fmt}", 1, KEEP)
        ser = orjson.dumps if fmt == "json" else wire.avro(schema_registry.url, tx)
        p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
        for i, (e, y) in enumerate(zip(events, truth, strict=True)):
            p.produce(tx, ser(e), e["id"].encode(), timestamp=T0 + i)
            if fmt == "json":
                p.produce(labels, orjson.dumps({"id": e["id"], "label": int(y)}), timestamp=T0 + i)
        assert p.flush(60) == 0
        s = RetrainSettings(bootstrap=kafka_bootstrap, model=str(store.folder(DEMO_MODEL_NAME)),
                            input_topic=tx, labels_topic=labels, alerts_topic="none", seed=3,
                            input_format=fmt, schema_registry=schema_registry.url)
        results[fmt] = run_retrain(RetrainRequest(s, Policy(), TimeRange(T0, T0 + 3_000)),
                                   T0 + 60_000)
    assert results["avro"].counts == results["json"].counts
    assert results["json"].counts["labeled"] == 3_000
    assert results["avro"].compared.candidate == results["json"].compared.candidate


def test_an_avro_schema_with_a_reference_to_another_subject(
    topic_factory: TopicFactory, schema_registry: registry_local.LocalRegistry,
) -> None:
    """Confluent's serializer writes with a schema whose field's type is a named type of
    another subject; the worker's registry client fetches the reference too."""
    topic = topic_factory("refs")
    client = SchemaRegistryClient({"url": schema_registry.url})
    kind = {"type": "enum", "name": "Channel", "namespace": "demo", "symbols": ["POS", "WEB"]}
    subject = f"{topic}-channel"
    client.register_schema(subject, Schema(orjson.dumps(kind).decode(), "AVRO"))
    version = client.get_latest_version(subject).version
    main = orjson.loads(wire.AVRO_SCHEMA)
    main["fields"].append({"name": "channel", "type": "demo.Channel"})
    schema = Schema(orjson.dumps(main).decode(), "AVRO",
                    [SchemaReference("demo.Channel", subject, version)])
    ser = AvroSerializer(client, schema)
    event = {**wire.events(1, seed=9)[0], "channel": "WEB"}
    value = bytes(ser(event, SerializationContext(topic, MessageField.VALUE)) or b"")
    decoder = decoders.get("avro")
    assert isinstance(decoder, WireDecoder)
    source = SchemaSource(RegistryConnection(schema_registry.url))
    look_up(decoder.book, source, [value])
    got = decoder.decode([value], 1 << 20)
    assert got.rejected == [] and got.events[0]["channel"] == "WEB"
    assert got.events[0]["amount"] == event["amount"]
