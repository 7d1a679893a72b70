"""A changelog restore from the real broker reports its progress as it reads (the monitor's
gauges and liveness follow it), and its end."""

from __future__ import annotations

from tests.conftest import TopicFactory
from tests.integration.helpers import produce
from worker.kafka_io.changelog import read_changelog
from worker.kafka_io.config import Connection
from worker.probes import Health


def test_restore_reports_records_and_share_as_it_reads(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("changelog", 1)
    produce(kafka_bootstrap, topic, ((f"k{i}".encode(), b"v" * 100) for i in range(20_000)))
    health = Health(stall_s=30, model_loaded=True, assigned=True, broker_ok=True)
    seen: list[tuple[bool, float]] = []
    n = 0
    for _key, _value, _offset in read_changelog(Connection(kafka_bootstrap), topic, 0,
                                                watch=health.restore):
        n += 1
        if n % 2500 == 0:
            seen.append((health.ready(), health.restore.share()))
    assert n == 20_000
    assert all(not ready for ready, _ in seen)  # not ready while restoring
    shares = [share for _, share in seen]
    assert shares == sorted(shares) and 0 < shares[0] < 1  # it moved, a poll at a time
    assert health.restore.records == 20_000
    assert health.restore.running == 0 and health.ready()  # done: ready again
