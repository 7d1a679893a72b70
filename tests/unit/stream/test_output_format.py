"""--output-format: JSON needs nothing; Avro registers the prediction schema under each
prediction topic's subject at start, asks again while the registry does not answer (until
start_timeout_s), and stops on a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from worker import config
from worker.core.decoders.wire import SchemaType
from worker.core.encoders.avro import SCHEMA, AvroEncoder
from worker.errors import ConfigError, ScoringError
from worker.kafka_io import registry
from worker.stream.output_format import build_encoder


@dataclass
class FakeSource:
    down_for: int = 0
    refuse: bool = False
    seen: list[tuple[str, SchemaType, str]] = field(default_factory=list)

    def register(self, subject: str, kind: SchemaType, text: str) -> int:
        if self.down_for:
            self.down_for -= 1
            raise registry.RegistryUnavailable("connection refused")
        if self.refuse:
            raise registry.SchemaRefused("409 incompatible")
        self.seen.append((subject, kind, text))
        return {"p-value": 7, "p-shadow-value": 8}[subject]


def avro_settings(**more: Any) -> config.Settings:
    return config.Settings(output_format="avro", schema_registry="http://r:8081",
                           output_topic="p", shadow_topic="p-shadow", **more)


def patch(monkeypatch: pytest.MonkeyPatch, source: FakeSource) -> None:
    monkeypatch.setattr(registry, "SchemaSource", lambda conn: source)


def test_json_is_orjson_and_needs_no_registry() -> None:
    assert build_encoder(config.Settings()) is orjson.dumps


def test_avro_needs_a_registry() -> None:
    with pytest.raises(ConfigError, match="--output-format avro needs --schema-registry"):
        build_encoder(config.Settings(output_format="avro"))


def test_avro_registers_both_subjects_and_writes_with_the_output_ones_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = FakeSource()
    patch(monkeypatch, source)
    encode = build_encoder(avro_settings())
    assert isinstance(encode, AvroEncoder) and encode.schema_id == 7
    assert source.seen == [("p-value", SchemaType.AVRO, SCHEMA),
                           ("p-shadow-value", SchemaType.AVRO, SCHEMA)]


def test_an_outage_at_start_is_asked_again_then_gives_up_at_start_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    patch(monkeypatch, FakeSource(down_for=3))
    encode = build_encoder(avro_settings(), sleep=sleep, clock=lambda: now[0])
    assert isinstance(encode, AvroEncoder) and slept == [0.2, 0.4, 0.8]
    patch(monkeypatch, FakeSource(down_for=10**6))
    with pytest.raises(ScoringError, match="cannot register the prediction schema"):
        build_encoder(avro_settings(start_timeout_s=10), sleep=sleep, clock=lambda: now[0])


def test_a_refused_schema_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    patch(monkeypatch, FakeSource(refuse=True))
    with pytest.raises(ConfigError, match="409 incompatible"):
        build_encoder(avro_settings())


@dataclass
class Msg:
    def topic(self) -> str:
        return "tx"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 77


def test_lineage_with_avro_outputs_encodes_the_record_again() -> None:
    import fastavro

    from worker.core.pipeline import Prediction
    from worker.stream.passthrough import with_lineage

    record: Any = {"id": "a", "score": 0.5, "label": 1, "model": "m", "model_version": "1",
                   "scored_at": 9}
    encode = AvroEncoder(4)
    [json_out] = with_lineage([Msg()], [Prediction(record, orjson.dumps(record))])  # type: ignore[list-item]
    [avro_out] = with_lineage([Msg()], [Prediction(record, encode(record))],  # type: ignore[list-item]
                              encode)
    assert isinstance(json_out, Prediction) and isinstance(avro_out, Prediction)
    where = {"topic": "tx", "partition": 2, "offset": 77}
    assert orjson.loads(json_out.payload)["source"] == where
    import io
    got = fastavro.schemaless_reader(io.BytesIO(avro_out.payload[5:]),
                                     fastavro.parse_schema(orjson.loads(SCHEMA)), None)
    assert got["source"] == where and got["id"] == "a"  # type: ignore[index]
