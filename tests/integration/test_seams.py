"""The worker loop from Python with one's own sink: real Kafka input, outputs in memory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import orjson

import worker
from tests.integration.helpers import produce, wait_for
from tests.unit.helpers import binary_bundle, event
from tests.unit.toys.memory_sink import INSTANCES
from worker.shutdown import StopFlag
from worker.stream import sinks


def test_run_worker_with_a_registered_sink(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    topic = topic_factory(partitions=2)
    bundle = binary_bundle(tmp_path / "m")
    produce(kafka_bootstrap, topic, [(f"e{i}".encode(), orjson.dumps(event(i)))
                                     for i in range(200)] + [(b"bad", b"{oops")])
    settings = worker.Settings(bootstrap=kafka_bootstrap, input_topic=topic,
                               group=group_factory(), model=str(bundle.path), metrics_port=0,
                               stats_interval_ms=0)
    sink = sinks.build("memory", settings)
    stop = StopFlag()
    totals: list[object] = []
    thread = threading.Thread(target=lambda: totals.append(
        worker.run_worker(settings, stop=stop, sink=sink)))
    thread.start()
    try:
        wait_for(lambda: len(INSTANCES[-1].sent) >= 201, 60, "201 outputs in the memory sink")
    finally:
        stop()
        thread.join(60)
    by_topic = {t: [v for tt, v, _, _ in INSTANCES[-1].sent if tt == t] for t in
                (settings.output_topic, settings.dlq_topic)}
    ids = sorted(orjson.loads(v or b"")["id"] for v in by_topic[settings.output_topic])
    assert ids == sorted(f"e{i}" for i in range(200))
    assert by_topic[settings.dlq_topic] == [b"{oops"]
    assert not thread.is_alive() and len(totals) == 1
