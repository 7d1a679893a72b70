"""The one librdkafka configuration builder: what each role gets and in which precedence."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from worker.config import Settings
from worker.errors import ConfigError
from worker.kafka_io.clients import consumer_config, is_fatal, producer_config
from worker.kafka_io.config import Connection, Role, client_config, connection, membership
from worker.kafka_io.fencing import fatal_line
from worker.kafka_io.tx_producer import TxTimeouts
from worker.monitor_app.settings import MonitorSettings


def test_worker_clients_get_group_client_id_and_user_properties() -> None:
    s = Settings(bootstrap="b1:9092,b2:9092", group="g", worker_id="w-1",
                 kafka={"security.protocol": "SASL_SSL", "linger.ms": "20"})
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


def test_a_worker_is_a_static_member_named_by_its_instance_id() -> None:
    s = Settings(group="g", instance_id="pod-0", session_timeout_s=12)
    conf = consumer_config(s)
    assert conf["group.id"] == "g"
    assert conf["group.instance.id"] == "pod-0"
    assert conf["session.timeout.ms"] == 12_000
    assert conf["heartbeat.interval.ms"] == 3000  # a third, at most Kafka's default 3 s
    short = consumer_config(Settings(group="g", instance_id="p", session_timeout_s=6))
    assert short["heartbeat.interval.ms"] == 2000
    eos = consumer_config(Settings(group="g", instance_id="p", guarantee="exactly-once"))
    assert eos["group.instance.id"] == "p"
    assert eos["isolation.level"] == "read_committed"


def test_static_membership_off_makes_a_dynamic_member() -> None:
    conf = consumer_config(Settings(group="g", instance_id="p", static_membership=False))
    assert "group.instance.id" not in conf
    assert conf["group.id"] == "g"


def test_the_users_session_timeout_property_still_wins() -> None:
    s = Settings(group="g", instance_id="p", kafka={"session.timeout.ms": "7000"})
    assert consumer_config(s)["session.timeout.ms"] == "7000"


def test_the_monitor_is_a_static_member_too() -> None:
    s = MonitorSettings(group="m", instance_id="monitor-1", session_timeout_s=20)
    conf = client_config(Role.TX_CONSUMER, connection(s), member=membership(s))
    assert (conf["group.id"], conf["group.instance.id"]) == ("m", "monitor-1")
    assert conf["session.timeout.ms"] == 20_000


def test_the_transaction_timeout_bounds_the_transactional_calls() -> None:
    s = Settings(guarantee="exactly-once", instance_id="p", transaction_timeout_s=8)
    conf = producer_config(s)
    assert conf["transaction.timeout.ms"] == 8000
    timeouts = TxTimeouts.of(conf)
    assert (timeouts.call_s, timeouts.stuck_s) == (8.0, 12.0)
    assert TxTimeouts.of({}).call_s == 60.0  # librdkafka's default
    assert "transaction.timeout.ms" not in producer_config(Settings())  # at-least-once


def test_a_commit_interval_past_the_transaction_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="commit_interval_ms 20000 must be below "
                       "transaction_timeout_s"):
        Settings(guarantee="exactly-once", commit_interval_ms=20_000)
    Settings(commit_interval_ms=20_000)  # at-least-once has no transaction


def test_a_fenced_static_member_names_its_id_and_the_fix() -> None:
    # What librdkafka hands consume() when a second process joins with the same id.
    err = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other "
                     "consumer with same group.instance.id")
    assert is_fatal(err)
    line = fatal_line("kafka consumer", err, {"group.id": "g", "group.instance.id": "host-a"})
    assert "'host-a'" in line and "'g'" in line
    assert line.endswith("give each running process its own --instance-id (the default is "
                         "the host name)")  # ends in ")": the CLI adds no unrelated hint
    other = KafkaError(KafkaError._FATAL, "something else")
    assert fatal_line("kafka consumer", other, {}) == "kafka consumer: something else"
