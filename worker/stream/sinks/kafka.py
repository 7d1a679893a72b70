"""The Kafka sink: an idempotent producer (kafka_io.BatchProducer) configured from the
settings; refused deliveries come back from ``flush_all`` for the loop to re-send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.config import Settings
from worker.kafka_io import BatchProducer, producer_config
from worker.stream.sinks import Sink, register


def kafka_sink(settings: Settings, stats: Callable[[str], None] | None = None) -> Sink:
    conf: dict[str, Any] = producer_config(settings)
    if stats is not None and settings.stats_interval_ms:
        conf |= {"statistics.interval.ms": settings.stats_interval_ms, "stats_cb": stats}
    return BatchProducer(conf)


register("kafka", kafka_sink)
