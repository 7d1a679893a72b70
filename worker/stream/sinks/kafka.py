"""The Kafka sink: an idempotent producer (kafka_io.BatchProducer), or in exactly-once
mode a transactional one (kafka_io.TxProducer), configured from the settings."""

from __future__ import annotations

from typing import Any

from worker.config import Settings
from worker.delivery_terms import Guarantee
from worker.kafka_io import BatchProducer, TxProducer, producer_config
from worker.stream.sinks import Sink, SinkHooks, register


def kafka_sink(settings: Settings, hooks: SinkHooks) -> Sink:
    conf: dict[str, Any] = producer_config(settings, hooks.record_limit)
    if hooks.stats is not None:
        conf["stats_cb"] = hooks.stats
    if settings.guarantee is Guarantee.EXACTLY_ONCE:
        return TxProducer(conf, hooks.watch)
    return BatchProducer(conf, hooks.watch)


register("kafka", kafka_sink)
