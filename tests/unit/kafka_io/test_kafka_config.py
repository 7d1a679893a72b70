"""The one librdkafka configuration builder: what each role gets and in which precedence."""

from __future__ import annotations

from worker.config import Settings
from worker.kafka_io.clients import consumer_config, producer_config
from worker.kafka_io.config import Connection, Role, client_config


def test_worker_clients_get_group_client_id_and_user_properties() -> None:
    s = Settings(bootstrap="b1:9092,b2:9092", group="g", worker_id="w-1",
                 kafka={"security.protocol": "SASL_SSL", "linger.ms": "20"})  # fmt: skip
    consumer = consumer_config(s)
    assert consumer["bootstrap.servers"] == "b1:9092,b2:9092"
    assert consumer["group.id"] == "g"
    assert consumer["client.id"] == "w-1"
    assert consumer["security.protocol"] == "SASL_SSL"
    assert consumer["enable.auto.commit"] is False
    producer = producer_config(s)
    assert producer["enable.idempotence"] is True
    assert producer["linger.ms"] == "20"  # the user's tuning beats the role's default
    assert "group.id" not in producer


def test_user_properties_cannot_override_what_correctness_rests_on() -> None:
    conn = Connection("b:9092", {"enable.auto.commit": "true",
                                 "isolation.level": "read_uncommitted"})
    assert client_config(Role.CONSUMER, conn)["enable.auto.commit"] is False
    assert client_config(Role.TX_CONSUMER, conn)["isolation.level"] == "read_committed"
    fixed = client_config(Role.TX_PRODUCER, conn, fixed={"transactional.id": "t"})
    assert fixed["transactional.id"] == "t"


def test_every_role_routes_librdkafka_logs_through_python_logging() -> None:
    for role in Role:
        conf = client_config(role, Connection("b:9092"))
        assert conf["logger"].name == "librdkafka"
