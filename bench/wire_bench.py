"""Wire-format benchmark: the worker draining the same events as JSON and as Avro (the
Confluent wire format, written by confluent_kafka's AvroSerializer), in one run.

    python bench/wire_bench.py --model demo --events 200000
    python bench/wire_bench.py --model lr30 --rounds 2

A registry of its own (registry-local, Apicurio) on a free port; for each round, each
format gets fresh 4-partition topics pre-loaded with the same events, and a worker with
the same settings (the events' JSON Schema too, so the decoding is the only difference)
drains them; events/s over the middle 80 % of the outputs' broker timestamps (as
bench/worker_bench.py). Rounds alternate JSON and Avro so that a drifting machine load
favours neither. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import worker_bench as wb  # bench/worker_bench.py: the script's own folder is on sys.path
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from worker import kafka_io
from worker.devtools import registry_local

AVRO_TYPES = {str: "string", int: "long", float: "double", bool: "boolean"}


def avro_schema(example: dict[str, Any]) -> str:
    fields = [{"name": k, "type": AVRO_TYPES[type(v)]} for k, v in example.items()]
    return orjson.dumps({"type": "record", "name": "Event", "fields": fields}).decode()


def free_port() -> int:
    for port in np.random.default_rng().integers(20_000, 32_000, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


def load(a: argparse.Namespace, t_in: str, fmt: str, url: str) -> None:
    """The same events (same seed) on ``t_in``, as JSON or as Avro."""
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5,
                  "queue.buffering.max.messages": 1_000_000})
    rng = np.random.default_rng(1)
    ser = None
    ctx = SerializationContext(t_in, MessageField.VALUE)
    for start in range(0, a.events, 50_000):
        batch = wb.events(a.model, rng, min(50_000, a.events - start), start)
        if fmt == "avro" and ser is None:
            ser = AvroSerializer(SchemaRegistryClient({"url": url}), avro_schema(batch[0]))
        for e in batch:
            value = orjson.dumps(e) if ser is None else ser(e, ctx)
            while True:
                try:
                    p.produce(t_in, value, e["id"].encode())
                    break
                except BufferError:
                    p.poll(0.01)
        p.poll(0)
    p.flush(120)


def drain(a: argparse.Namespace, fmt: str, url: str, model: Path,
          schema: Path) -> dict[str, Any]:
    t_in, t_out = wb.topics(a.bootstrap)
    load(a, t_in, fmt, url)
    s = wb.System(f"worker {fmt}", "worker",
                  extra=("--input-format", fmt, "--schema-registry", url))
    s.start(a.bootstrap, t_in, t_out, model, schema, a.batch_max)
    out = kafka_io.drain(a.bootstrap, t_out, a.events, 600, idle_s=5)
    code, peak = s.stop()
    wb.drop(a.bootstrap, t_in, t_out)
    stamps = np.array([r.timestamp_ms for r in out], dtype=np.float64)
    return {"format": fmt, "events_per_s": round(wb.steady_rate(stamps)), "outputs": len(out),
            "peak_rss_mib": None if peak is None else round(peak, 1), "exit": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--model", choices=["demo", "lr30"], default="demo")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch-max", type=int, default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wire-bench-"))
    model, schema = wb.bundle_and_schema(a.model, tmp)
    reg = registry_local.LocalRegistry(port=free_port(), state_root=tmp / "state")
    registry_local.start(reg)
    runs = []
    try:
        for r in range(a.rounds):
            for fmt in (("json", "avro") if r % 2 == 0 else ("avro", "json")):
                runs.append(drain(a, fmt, reg.url, model, schema))
    finally:
        registry_local.stop(reg)
    rate = {f: float(np.median([x["events_per_s"] for x in runs if x["format"] == f]))
            for f in ("json", "avro")}
    print(orjson.dumps({"model": a.model, "events": a.events, "machine": wb.machine(),
                        "runs": runs, "median_events_per_s": rate,
                        "avro_over_json": round(rate["avro"] / rate["json"], 3)}).decode())


if __name__ == "__main__":
    main()
