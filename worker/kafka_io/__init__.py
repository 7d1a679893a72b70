"""Everything that talks to Kafka: the only package that imports confluent_kafka.

``admin``: readiness, topics, reading a topic back. ``clients``: the worker's
batch consumer and producer. ``tx``: the monitor's transactional loop and the
changelog reader it restores state from. ``control``: the model-control topic reader.
"""

from worker.kafka_io.admin import (
    Received,
    admin,
    create_topics,
    delete_topics,
    drain,
    port_open,
    wait_for_broker,
)
from worker.kafka_io.clients import (
    BatchConsumer,
    BatchProducer,
    Headers,
    Message,
    consumer_config,
    producer_config,
)
from worker.kafka_io.control import ControlReader, ControlRecord

__all__ = [
    "BatchConsumer",
    "BatchProducer",
    "ControlReader",
    "ControlRecord",
    "Headers",
    "Message",
    "Received",
    "admin",
    "consumer_config",
    "create_topics",
    "delete_topics",
    "drain",
    "port_open",
    "producer_config",
    "wait_for_broker",
]
