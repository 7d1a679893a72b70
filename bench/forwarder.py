"""The no-model forwarder: the broker's own latency, the baseline of bench/worker_bench.py.

    python bench/forwarder.py --bootstrap H:P --input-topic IN --output-topic OUT --group G

Hands each event on as it arrives (consume what is buffered, else wait for one;
produce with ``linger.ms=0``; auto-commit), keyed like its input. Prints ``ready``
once it owns partitions; SIGTERM flushes and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from confluent_kafka import Consumer, Producer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--input-topic", required=True)
    ap.add_argument("--output-topic", required=True)
    ap.add_argument("--group", required=True)
    args = ap.parse_args()
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 20})
    p = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0,
                  "enable.idempotence": True, "queue.buffering.max.messages": 500_000})

    def assigned(consumer: Any, parts: list[Any]) -> None:
        if parts:
            print("ready", flush=True)

    c.subscribe([args.input_topic], on_assign=assigned)
    out, produce = args.output_topic, p.produce
    while not stop[0]:
        msgs = c.consume(1000, 0) or c.consume(1, 0.1)
        for m in msgs:
            if m.error() is None:
                while True:
                    try:
                        produce(out, m.value(), m.key())
                        break
                    except BufferError:
                        p.poll(0.01)
        p.poll(0)
    p.flush(30)
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
