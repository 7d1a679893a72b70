"""Broker round trip: produce N messages, read them back through a consumer group.

Prints a JSON line with the produce and consume rates, a baseline for what
the broker alone does on this machine.
"""

from __future__ import annotations

import argparse
import time
import uuid

import orjson
from confluent_kafka import Consumer, Producer

from worker import kafka_io


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    kafka_io.create_topics(args.bootstrap, {topic: args.partitions})
    payload = orjson.dumps({"id": "x", "amount": 12.5, "pad": "y" * 150})
    p = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    t0 = time.perf_counter()
    for i in range(args.count):
        while True:
            try:
                p.produce(topic, payload, str(i).encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)
    produce_s = time.perf_counter() - t0
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": topic,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    seen, t1 = 0, time.perf_counter()
    deadline = t1 + 120
    while seen < args.count and time.perf_counter() < deadline:
        seen += sum(1 for m in c.consume(1000, 1.0) if m.error() is None)
    consume_s = time.perf_counter() - t1
    c.close()
    kafka_io.delete_topics(args.bootstrap, [topic])
    print(orjson.dumps({"messages": args.count, "consumed": seen,
                        "produce_per_s": round(args.count / produce_s),
                        "consume_per_s": round(seen / consume_s)}).decode())
    if seen != args.count:
        raise SystemExit(f"lost messages: produced {args.count}, consumed {seen}")


if __name__ == "__main__":
    main()
