"""Everything that talks to Kafka: the only package that imports confluent_kafka.

``admin``: readiness, topics, reading a topic back. ``clients``: the worker's batch
consumer; ``producer``: its producers (per-output delivery reports, transactions).
``limits``: the output topics' record size limits. ``watch``: broker connection state.
``tx``: the monitor's transactional loop and the changelog reader it restores state
from. ``control``: the model-control topic reader.
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
    Headers,
    Message,
    consumer_config,
    producer_config,
)
from worker.kafka_io.control import ControlReader, ControlRecord
from worker.kafka_io.producer import BatchProducer, TxProducer, TxState

__all__ = [
    "BatchConsumer",
    "BatchProducer",
    "ControlReader",
    "ControlRecord",
    "Headers",
    "Message",
    "Received",
    "TxProducer",
    "TxState",
    "admin",
    "consumer_config",
    "create_topics",
    "delete_topics",
    "drain",
    "port_open",
    "producer_config",
    "wait_for_broker",
]
