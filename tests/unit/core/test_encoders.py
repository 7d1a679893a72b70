"""The output formats (worker/core/encoders/): JSON stays orjson's bytes; the Avro encoder
writes schemas/prediction.avsc in the Confluent wire format, read back by fastavro (an
independent reader) and by the worker's own avro decoder into the same checked record."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest

from tests.unit.helpers import (
    SCHEMAS,
    binary_bundle,
    event,
    multiclass_bundle,
    regression_bundle,
)
from worker.core import decoders
from worker.core.decoders.wire import SchemaType, WireDecoder, WriterSchema
from worker.core.encoders.avro import SCHEMA, AvroEncoder
from worker.core.encoders.json import encode as encode_json
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.core.records import PredictionView, read_prediction

PARSED = fastavro.parse_schema(orjson.loads(SCHEMA))


def fastavro_read(value: bytes) -> dict[str, Any]:
    assert value[0] == 0
    record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(value[5:]), PARSED, None)
    return record


def test_the_avro_schema_is_the_json_schemas_twin() -> None:
    avsc = orjson.loads((SCHEMAS / "prediction.avsc").read_bytes())
    json_schema = orjson.loads((SCHEMAS / "prediction.schema.json").read_bytes())
    assert (SCHEMAS / "prediction.avsc").read_text() == SCHEMA
    assert [f["name"] for f in avsc["fields"]] == list(json_schema["properties"])
    optional = {f["name"] for f in avsc["fields"] if "null" in f["type"]}
    assert optional == set(json_schema["properties"]) - set(json_schema["required"])


RECORDS: list[dict[str, Any]] = [
    {"id": "a", "score": 0.25, "label": 0, "model": "m", "model_version": "1", "scored_at": 5},
    {"id": "é-ü", "score": 1.0, "label": "fraud", "model": "m|x", "model_version": "2",
     "event_ts": -1, "scored_at": 1_790_000_000_123, "true_label": 1},
    {"id": "b", "score": {"0": 0.1, "1": 0.2, "cat": 0.7}, "label": "cat", "model": "m",
     "model_version": "3", "event_ts": 2**62, "scored_at": 0, "true_label": "cat"},
    {"id": "c", "score": 3.5e300, "label": -12.75, "model": "r", "model_version": "4",
     "scored_at": 64, "source": {"topic": "tx", "partition": 3, "offset": 2**40},
     "true_label": 2.5},
    {"id": "d", "score": -0.0, "label": 2**63 - 1, "model": "m", "model_version": "1",
     "event_ts": -(2**63), "scored_at": 63, "true_label": -(2**63)},
    {"id": "e", "score": 0.9, "label": 1, "model": "m", "model_version": "1", "scored_at": 7,
     "segments": {"country": "DE", "card.kind": "débit"},
     "reasons": {"baseline": -2.5, "output": "log_odds", "top": [
         {"feature": "amount", "value": 912.5, "contribution": 1.75},
         {"feature": "country", "value": "DE", "contribution": -0.25},
         {"feature": "night", "value": True, "contribution": 0.125},
         {"feature": "merchant_risk", "value": None, "contribution": 0.0},
         {"feature": "hour", "value": 23, "contribution": 0.5}]}},
    {"id": "f", "score": 12.0, "label": 12.0, "model": "r", "model_version": "1",
     "scored_at": 8, "reasons": {"baseline": 10.0, "output": "raw", "top": []}},
]


#: The optional fields, as fastavro reads them back when a record has none.
ABSENT: dict[str, Any] = {"event_ts": None, "source": None, "true_label": None,
                          "segments": None, "reasons": None}


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["id"])
def test_avro_predictions_read_back_by_fastavro_and_the_avro_decoder(
        record: dict[str, Any]) -> None:
    value = AvroEncoder(70_000)(record)  # type: ignore[arg-type]
    assert value[:5] == b"\x00" + (70_000).to_bytes(4, "big")
    full = {**ABSENT, **record}
    assert fastavro_read(value) == full
    decoder = decoders.get("avro")
    assert isinstance(decoder, WireDecoder)
    decoder.book.learn(WriterSchema(70_000, SchemaType.AVRO, SCHEMA))
    decoded = decoder.decode([value], 1 << 20)
    assert decoded.rejected == [] and len(decoded.events) == 1
    view = PredictionView(*read_prediction(decoded.events[0]))  # lineage is not the monitor's
    # Lineage and reasons are not the monitor's; segments it reads beside the view (rekey).
    assert view.to_dict() == {k: v for k, v in record.items()
                              if k not in ("source", "reasons", "segments")}
    assert decoded.events[0].get("segments") == record.get("segments")
    if "source" in record:
        assert decoded.events[0]["source.offset"] == record["source"]["offset"]


def test_fastavro_writes_the_same_bytes() -> None:
    for record in RECORDS:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, PARSED, {**ABSENT, **record})
        assert AvroEncoder(1)(record)[5:] == out.getvalue(), record  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [binary_bundle, multiclass_bundle, regression_bundle])
def test_json_stays_the_default_and_avro_carries_the_same_records(
        tmp_path: Path, make: Any) -> None:
    ctx = ScoringContext(make(tmp_path / "m"), label_field="truth")
    assert ctx.encode is encode_json is orjson.dumps
    values = [orjson.dumps(e) for e in (event(0), event(1, truth=1), event(2, truth="x"))]
    as_json = score_values(values, ctx, 1_700_000_000_123)
    from dataclasses import replace
    as_avro = score_values(values, replace(ctx, encode=AvroEncoder(9)), 1_700_000_000_123)
    for j, a in zip(as_json, as_avro, strict=True):
        assert isinstance(j, Prediction) and isinstance(a, Prediction)
        assert j.payload == orjson.dumps(j.record)
        assert PredictionView(*read_prediction(fastavro_read(a.payload))).to_dict() == \
            orjson.loads(j.payload)


def test_a_label_of_another_type_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="a label must be an integer, a number or a string"):
        AvroEncoder(1)({**RECORDS[0], "label": None})  # type: ignore[typeddict-item]
    with pytest.raises(ValueError, match="does not fit"):
        AvroEncoder(2**32)


def test_times_and_numbers_of_every_size_write_fastavros_bytes() -> None:
    """The encoder keeps bytes from one record to the next (the model, the scoring time, an
    epoch time's high bits): records whose values change in every way still match."""
    rng = np.random.default_rng(4)
    encode = AvroEncoder(3)
    edges = [0, 1, -1, 63, 64, -65, 2**27, 2**28 - 1, 2**28, 2**63 - 1, -(2**63)]
    times = edges + [int(t) for t in rng.integers(-(2**63), 2**63 - 1, 2000)] + \
        [1_790_000_000_000 + int(d) for d in rng.integers(0, 10**9, 2000)]
    for k, t in enumerate(times):
        record = {"id": "x" * (k % 70), "score": 0.5, "label": int(t % 200) - 100,
                  "model": "m", "model_version": str(k % 3), "event_ts": t,
                  "scored_at": abs(t) // 2, "true_label": None}
        out = io.BytesIO()
        fastavro.schemaless_writer(out, PARSED, record)
        assert encode(record)[5:] == out.getvalue(), record  # type: ignore[arg-type]
