"""Everything that talks to Kafka: the only package that imports confluent_kafka.

``startup``: property checks and broker readiness. ``admin``: topics, SCRAM users,
reading a topic back. ``clients``: the worker's batch consumer; ``producer``: its
producers (per-output delivery reports, transactions). ``limits``: the output topics'
record size limits. ``watch``: broker connection state. ``tx``: the monitor's
transactional loop and the changelog reader it restores state from. ``control``: the
model-control topic reader and publisher.
"""

from worker.kafka_io.admin import (
    Received,
    admin,
    create_topics,
    delete_topics,
    drain,
    port_open,
    upsert_scram_user,
)
from worker.kafka_io.clients import (
    BatchConsumer,
    Message,
    PartitionId,
    consumer_config,
    partition_id,
    producer_config,
)
from worker.kafka_io.control import ControlReader, ControlRecord, publish_control, read_control
from worker.kafka_io.producer import BatchProducer
from worker.kafka_io.startup import check_config, describe_fatal, versions, wait_for_broker
from worker.kafka_io.tx_producer import TxProducer

__all__ = [
    "BatchConsumer",
    "BatchProducer",
    "ControlReader",
    "ControlRecord",
    "Message",
    "PartitionId",
    "Received",
    "TxProducer",
    "admin",
    "check_config",
    "consumer_config",
    "create_topics",
    "delete_topics",
    "describe_fatal",
    "drain",
    "partition_id",
    "port_open",
    "producer_config",
    "publish_control",
    "read_control",
    "upsert_scram_user",
    "versions",
    "wait_for_broker",
]
