"""Outputs that fit, the ledger of acknowledged offsets, the start-up record limit, and
the broker connection watch: the pure parts of the loop's delivery machinery."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from tests.unit.helpers import SCHEMAS, binary_bundle
from tests.unit.stream_fakes import Msg, good
from worker.core.schema import load_schema_json, schema_errors
from worker.delivery_terms import MAX_EVENT_BYTES_DEFAULT, PRODUCER_MAX_BYTES
from worker.errors import ConfigError, SendError, SendFailure
from worker.kafka_io.producer import classify
from worker.kafka_io.watch import BrokerWatch, TransportNoise
from worker.stream.ledger import Ledger
from worker.stream.outputs import (
    DEAD_LETTER_HEADROOM,
    Kind,
    RecordLimit,
    Rejecter,
    fallback,
    headers_size,
    record_limit,
)


@pytest.fixture(scope="module")
def rejecter(tmp_path_factory: pytest.TempPathFactory) -> Rejecter:
    bundle = binary_bundle(tmp_path_factory.mktemp("m") / "m")
    return Rejecter(bundle, "w1", RecordLimit(1_000_000, "the producer"))


@pytest.mark.parametrize("size", [1_040_000, 5_000_000])
def test_a_fallback_dead_letter_fits_and_says_what_was_cut(rejecter: Rejecter, size: int) -> None:
    value = b"x" * size
    err = SendError(SendFailure.TOO_LARGE, "Broker: Message size too large")
    kind, topic, cut, key, hdrs, source = fallback(Msg(value, 9, 2, _key=b"card-1"), 4,
                                                   "predictions", err, "dlq", rejecter, 5)
    assert (kind, topic, key, source) == (Kind.FALLBACK, "dlq", b"card-1", 4)
    headers = dict(hdrs or [])
    assert headers["dlq.error.kind"] == "too_large"
    assert headers["dlq.output.topic"] == "predictions"
    assert headers["dlq.original.length"] == str(size)
    assert headers["dlq.original.sha256"] == hashlib.sha256(value).hexdigest()
    assert headers["dlq.original.truncated"] == "true"
    assert value.startswith(cut or b"")
    assert rejecter.limit.fits(len(cut or b"") + len(key or b"") + headers_size(hdrs))
    schema = load_schema_json(SCHEMAS / "dead_letter.schema.json")
    assert schema_errors(headers, schema) == []


def test_a_fallback_keeps_whole_bytes_that_fit(rejecter: Rejecter) -> None:
    err = SendError(SendFailure.REJECTED, "Broker: Invalid record")
    _, _, value, key, hdrs, _ = fallback(Msg(b'{"id": "a"}', 1, _key=None), 0, "out", err,
                                         "dlq", rejecter, 5)
    headers = dict(hdrs or [])
    assert value == b'{"id": "a"}' and key is None
    assert headers["dlq.error.kind"] == "undeliverable"
    assert headers["dlq.original.truncated"] == "false"


def test_a_huge_key_is_cut_too(rejecter: Rejecter) -> None:
    err = SendError(SendFailure.TOO_LARGE, "too large")
    _, _, value, key, hdrs, _ = fallback(Msg(b"v", 1, _key=b"k" * 2_000_000), 0, "out", err,
                                         "dlq", rejecter, 5)
    headers = dict(hdrs or [])
    assert headers["dlq.original.key.length"] == "2000000"
    assert rejecter.limit.fits(len(key or b"") + len(value or b"") + headers_size(hdrs))


def test_the_record_limit_is_the_smallest_and_must_hold_the_largest_dead_letter() -> None:
    limit = record_limit(1_000_000, {"out": 1_048_588, "dlq": 2_000_000, "gone": None}, 983_040)
    assert limit.bytes == 1_000_000 and "producer" in limit.source
    limit = record_limit(5_000_000, {"out": 1_048_588, "dlq": 3_000_000}, 983_040)
    assert limit.bytes == 1_048_588 and "out" in limit.source
    with pytest.raises(ConfigError, match="max_event_bytes 1048576 does not fit"):
        record_limit(1_000_000, {"out": 1_048_588}, 1_048_576)
    assert MAX_EVENT_BYTES_DEFAULT + DEAD_LETTER_HEADROOM <= PRODUCER_MAX_BYTES  # they agree


def test_the_ledger_advances_only_over_finished_flights() -> None:
    ledger = Ledger()
    a = ledger.open([good(0), good(1), good(7, 1)])
    b = ledger.open([good(2), good(8, 1)])
    a.pending, b.pending = 3, 2
    b.pending = 0
    assert not ledger.advance() and ledger.take() == {}
    a.pending = 1
    a.failures.append((("out", b"v", b"k"), SendError(SendFailure.TRANSIENT, "timed out")))
    a.pending = 0
    assert not ledger.advance()  # a refusal not handled yet holds it back
    assert len(ledger.failures()) == 1
    assert ledger.advance()
    assert ledger.take() == {("in", 0): 3, ("in", 1): 9} and ledger.events == 0


def test_a_lost_partition_is_never_committed() -> None:
    ledger = Ledger()
    f = ledger.open([good(0), good(5, 1)])
    ledger.forget([("in", 1)])
    f.pending = 0
    ledger.advance()
    assert ledger.take() == {("in", 0): 1}


def test_delivery_errors_are_classified() -> None:
    assert classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)).failure is SendFailure.TOO_LARGE
    assert classify(KafkaError(KafkaError.INVALID_RECORD)).failure is SendFailure.REJECTED
    assert classify(KafkaError(KafkaError._MSG_TIMED_OUT)).failure is SendFailure.TRANSIENT
    assert classify(KafkaError(KafkaError._UNKNOWN_TOPIC)).failure is SendFailure.TRANSIENT


def test_the_watch_follows_the_fresh_consumer_and_logs_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    states: list[bool] = []
    w = BrokerWatch(clock=lambda: now[0], on_change=states.append)
    up = {"brokers": {"b1": {"nodeid": 1, "state": "UP"}}}
    down = {"brokers": {"b1": {"nodeid": 1, "state": "TRY_CONNECT"}}}
    caplog.set_level(logging.INFO, "worker.kafka_io.watch")
    w.stats("consumer", up)
    w.stats("producer", down)  # an idle producer: the fresh consumer decides
    assert w.up and states == []
    for _ in range(50):  # the broker goes away: one line, not fifty
        now[0] += 0.1
        assert w.error("consumer", KafkaError(KafkaError._TRANSPORT))
    w.error("consumer", KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert not w.up and states == [False]
    now[0] += 10  # the loop only polls the producer now (outputs wait): its view decides
    w.stats("producer", up)
    assert w.up and states == [False, True]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "connection errors meanwhile" in lines[1]
    assert not w.error("consumer", KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))


def test_per_attempt_connection_lines_of_librdkafka_are_filtered() -> None:
    noise = TransportNoise()
    rec = logging.makeLogRecord({"msg": "FAIL [rdkafka#consumer-1] 127.0.0.1:9092/1: Connect "
                                        "to ipv4#127.0.0.1:9092 failed: Connection refused"})
    assert not noise.filter(rec)
    auth = logging.makeLogRecord({"msg": "FAIL SASL authentication error: Authentication failed"})
    assert noise.filter(auth)
    timeout = logging.makeLogRecord({"msg": "FAIL [rdkafka#producer-2] 127.0.0.1:9092/1: 1 "
                                            "request(s) timed out: disconnect (after 60012ms)"})
    assert not noise.filter(timeout)
    # The member lost its partitions: said, unlike a connection attempt.
    session = logging.makeLogRecord({"msg": "SESSTMOUT [rdkafka#consumer-1] Consumer group "
                                            "session timed out (in join-state steady) after "
                                            "45000 ms without a successful response from the "
                                            "group coordinator: revoking assignment and "
                                            "rejoining group"})
    assert noise.filter(session)


def test_schema_kinds_include_the_output_failures(tmp_path: Path) -> None:
    schema = load_schema_json(SCHEMAS / "dead_letter.schema.json")
    assert {"too_large", "undeliverable"} <= set(schema["properties"]["dlq.error.kind"]["enum"])


def test_readiness_counts_silence_as_lost_and_ignores_clients_still_connecting() -> None:
    now = [0.0]
    w = BrokerWatch(clock=lambda: now[0])
    up = {"brokers": {"b1": {"nodeid": 1, "state": "UP"}}}
    down = {"brokers": {"b1": {"nodeid": 1, "state": "CONNECT"}}}
    assert w.current()  # nothing reported yet: what the start-up check found stands
    w.stats("producer", down)  # a new producer still connecting says nothing
    assert w.up and w.current()
    w.stats("consumer", up)
    now[0] += 2.0
    assert w.current()
    now[0] += 2.0  # no client reported for 4 s: the loop waits inside a call
    assert w.up and not w.current()
    w.stats("producer", up)
    assert w.current()


def test_a_replaced_client_is_given_time_to_connect_then_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transactional producer or consumer replaced after a hang reports under the old
    one's name: its first reports, before it connects, are no outage; if it never
    connects (the broker is away), its reports count after ``fresh_s``."""
    now = [0.0]
    w = BrokerWatch(clock=lambda: now[0])
    up = {"brokers": {"b1": {"nodeid": 1, "state": "UP"}}}
    down = {"brokers": {"b1": {"nodeid": 1, "state": "CONNECT"}}}
    w.stats("producer", up)
    with caplog.at_level(logging.INFO, logger="worker.kafka_io.watch"):
        w.replaced("producer")
        now[0] += 1.0
        w.stats("producer", down)
        assert w.up and not caplog.records
        now[0] += 1.0
        w.stats("producer", up)  # connected
        w.replaced("producer")
        for _ in range(3):  # this one never connects
            now[0] += 1.0
            w.stats("producer", down)
    assert not w.up and not w.current()
    assert [r.getMessage()[:35] for r in caplog.records] == [
        "lost the connection to every broker"]


def test_a_finished_flight_lets_go_of_its_messages_before_its_turn() -> None:
    ledger = Ledger()
    first = ledger.open([good(0)])
    second = ledger.open([good(1)])
    first.pending, second.pending = 1, 0
    second.outputs = [(Kind.PREDICTION, "out", b"v", b"k", None, 0)]
    assert not ledger.advance()
    assert second.msgs == () and second.outputs == [] and ledger.events == 2
    first.pending = 0
    assert ledger.advance() and ledger.take() == {("in", 0): 2} and ledger.events == 0
