"""The monitor's --prediction-format: Avro predictions become the records the re-key reads
(the same blocks as their JSON twins); an unreadable one counts as invalid; while the
registry does not answer the loop waits with /readyz 503, alive, and stops waiting on a stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from worker.core import decoders
from worker.core.decoders.wire import SchemaType, WireDecoder, WriterSchema
from worker.core.encoders.avro import SCHEMA, AvroEncoder
from worker.errors import ConfigError, ScoringError
from worker.monitor.rekey import rekey
from worker.monitor_app import wire
from worker.monitor_app.settings import MonitorSettings
from worker.probes import Health

PREDS: list[dict[str, Any]] = [
    {"id": f"p-{i}", "score": i / 10, "label": int(i >= 5), "model": "m", "model_version": "1",
     "event_ts": 1_790_000_000_000 + i, "scored_at": 1_790_000_001_000,
     **({"true_label": i % 2} if i % 3 else {})} for i in range(10)]


@dataclass
class Source:
    url: str = "http://registry"
    down: int = 0
    asked: list[int] = field(default_factory=list)

    def fetch(self, schema_id: int) -> WriterSchema | None:
        self.asked.append(schema_id)
        if self.down:
            self.down -= 1
            raise ScoringError("connection refused")
        return WriterSchema(schema_id, SchemaType.AVRO, SCHEMA) if schema_id == 3 else None


@dataclass
class Msg:
    raw: bytes | None
    where: str = "preds"

    def value(self) -> bytes | None:
        return self.raw

    def topic(self) -> str:
        return self.where


def reader(source: Source, health: Health, stop: list[bool] | None = None) -> wire.WirePredictions:
    decoder = decoders.get("avro")
    assert isinstance(decoder, WireDecoder)
    flag = stop if stop is not None else [False]
    return wire.WirePredictions(decoder, source, ScoringError, health, lambda: flag[0],
                                backoff_max_s=0.2)


def items(values: list[Any]) -> list[tuple[bool, Any, int, int]]:
    return [(True, v, 1_790_000_002_000, 0) for v in values]


def test_avro_predictions_make_the_same_blocks_as_json() -> None:
    health = Health(stall_s=30)
    avro = [AvroEncoder(3)(p) for p in PREDS]  # type: ignore[arg-type]
    msgs = [Msg(v) for v in avro] + [Msg(b"label bytes", "labels")]
    values = reader(Source(), health).values(msgs, "preds")  # type: ignore[arg-type]
    assert values[-1] == b"label bytes"  # another topic's values are left as they are
    as_avro = rekey(items(values[:-1]), 4, "true_label")
    as_json = rekey(items([orjson.dumps(p) for p in PREDS]), 4, "true_label")
    assert {p: b.encode() for p, b in as_avro.items()} == \
        {p: b.encode() for p, b in as_json.items()}
    assert health.registry_ok


def test_unreadable_predictions_are_none_and_count_as_invalid() -> None:
    good = AvroEncoder(3)(PREDS[0])  # type: ignore[arg-type]
    values = reader(Source(), Health(stall_s=30)).decode(
        [good, b"\x00\x00\x00\x00\x09" + good[5:], b"{}", good[:9], None])
    assert values[0] is not None and values[1:] == [None, None, None, None]
    blocks = rekey(items(values), 1, "true_label")
    assert blocks[0].encode() != rekey(items(values[:1]), 1, "true_label")[0].encode()


def test_an_outage_waits_alive_and_not_ready_then_reads() -> None:
    health, source = Health(stall_s=30), Source(down=2)
    r = reader(source, health)
    turns = []
    health.turned = lambda: turns.append(1)  # type: ignore[method-assign]
    assert r.decode([AvroEncoder(3)(PREDS[0])])[0] is not None  # type: ignore[arg-type]
    assert source.asked == [3, 3, 3] and len(turns) == 2 and health.registry_ok


def test_a_stop_ends_the_wait() -> None:
    health = Health(stall_s=30)
    with pytest.raises(ScoringError, match="connection refused"):
        reader(Source(down=10**6), health, stop=[True]).decode(
            [AvroEncoder(3)(PREDS[0])])  # type: ignore[arg-type]
    assert not health.registry_ok


def test_json_needs_nothing_and_avro_a_registry() -> None:
    assert wire.build(MonitorSettings(), Health(stall_s=30), lambda: False) is None
    with pytest.raises(ConfigError, match="--prediction-format avro needs --schema-registry"):
        wire.build(MonitorSettings(prediction_format="avro"), Health(stall_s=30),
                   lambda: False)
