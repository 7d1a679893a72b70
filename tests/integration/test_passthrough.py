"""Headers in, the same headers out, on every kind of output; each prediction names its input;
a traceparent in gives outputs in the same trace (``--pass-headers``, ``--lineage``,
``--tracing`` with the OpenTelemetry SDK), on the real broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from tests.integration.helpers import TRACED_LAUNCHER, Out, WorkerProc, read_topic
from worker.devtools.demo import make_events, train_demo

TopicFactory = Callable[..., str]
#: The outputs' record limit in this test: small, so that one header can exceed it.
LIMIT = 100_000


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_demo(tmp_path_factory.mktemp("model") / "fraud", seed=4, n=3000)


@pytest.fixture(scope="module")
def shadow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another version: a shadow of the served version itself scores nothing."""
    return train_demo(tmp_path_factory.mktemp("shadow") / "fraud", seed=5, n=3000, version="2")


def traceparent(i: int) -> bytes:
    return f"00-{i + 1:032x}-{i + 2:016x}-01".encode()  # all-zero ids are invalid


def send(bootstrap: str, topic: str,
         records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "message.max.bytes": 2_000_000})
    errors: list[str] = []
    for key, value, headers in records:
        p.produce(topic, value, key, headers=headers,
                  on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        p.poll(0)
    assert p.flush(60) == 0 and errors == []


def by_key(outs: list[Out]) -> dict[bytes, Out]:
    got = {o.key: o for o in outs if o.key is not None}
    assert len(got) == len(outs), "a key came twice"
    return got


def test_headers_and_lineage_reach_every_output_that_answers_an_input(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    bundle_dir: Path, shadow_dir: Path, tmp_path: Path,
) -> None:
    small = {"max.message.bytes": str(LIMIT)}
    t = {"in": topic_factory("in", 2), "out": topic_factory("out", 2, small),
         "dlq": topic_factory("dlq", 1, small), "shadow": topic_factory("shadow", 2, small)}
    events, _ = make_events(np.random.default_rng(1), 200, 0, 1_790_000_000_000)
    records = []
    for i, e in enumerate(events):
        value = orjson.dumps(e) if i % 20 else b"not json"  # 10 dead letters
        headers = [("traceparent", traceparent(i)), ("X-Request-Id", f"r{i}".encode()),
                   ("authorization", b"Bearer secret")]
        records.append((f"k{i}".encode(), value, headers))
    big = [("traceparent", b"0" * (LIMIT + 1000))]  # passes nothing past the limit
    records.append((b"big", orjson.dumps({**events[1], "id": "big"}), big))
    send(kafka_bootstrap, t["in"], records)
    inputs = by_key(read_topic(kafka_bootstrap, t["in"], len(records), settle=0.5))
    launcher = tmp_path / "traced_worker.py"
    launcher.write_text(TRACED_LAUNCHER)

    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"],
                    "--group", group_factory(), "--model", str(bundle_dir),
                    "--shadow-model", str(shadow_dir), "--shadow-topic", t["shadow"],
                    "--metrics-port", "0", "--max-event-bytes", "20000",
                    "--pass-headers", "true", "--lineage", "true", "--tracing", "true"],
                   tmp_path / "worker.log", launcher=launcher)
    try:
        out = by_key(read_topic(kafka_bootstrap, t["out"], 191, settle=1.0))
        shadow = by_key(read_topic(kafka_bootstrap, t["shadow"], 191, settle=0.5))
        dlq = by_key(read_topic(kafka_bootstrap, t["dlq"], 10, settle=0.5))
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    assert len(out) == len(shadow) == 191 and len(dlq) == 10
    for key, answer in [*out.items(), *shadow.items(), *dlq.items()]:
        src = inputs[key]
        if key == b"big":
            assert answer.headers == {}, "past the limit: the prediction goes without them"
            continue
        passed = {k: v for k, v in answer.headers.items() if not k.startswith("dlq.")}
        assert passed.keys() == {"traceparent", "X-Request-Id"}, key
        assert passed["X-Request-Id"] == src.headers["X-Request-Id"]
        version, trace_id, span_id, flags = passed["traceparent"].split("-")
        given = src.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == (given[0], given[1], given[3]), "the same trace"
        assert span_id != given[2], "under the worker's span"
        if key in dlq:
            assert answer.headers["dlq.source.offset"] == str(src.offset)
            continue
        source = orjson.loads(answer.value or b"")["source"]
        assert source == {"topic": t["in"], "partition": src.partition, "offset": src.offset}
    # The prediction and the shadow prediction of "big": one line (then one a minute at most).
    assert w.output().count("went without their passed headers") == 1, w.output()[-2000:]
