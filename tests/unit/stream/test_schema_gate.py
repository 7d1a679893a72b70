"""The schema gate: lookups before scoring; an unknown id is remembered, an outage holds the
batch in hand (nothing read, nothing lost), with backoff, and /readyz follows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.core.decoders.wire import SchemaBook, SchemaType, Unusable, WriterSchema
from worker.errors import ScoringError
from worker.probes import Health
from worker.stream.schema_gate import SchemaGate

SCHEMA = '{"type": "record", "name": "T", "fields": [{"name": "id", "type": "string"}]}'


@dataclass
class Msg:
    raw: bytes

    def value(self) -> bytes:
        return self.raw


def wire(schema_id: int) -> Msg:
    return Msg(b"\x00" + schema_id.to_bytes(4, "big") + b"\x02x")


@dataclass
class Source:
    url: str = "http://registry"
    down: bool = False
    asked: list[int] = field(default_factory=list)

    def fetch(self, schema_id: int) -> WriterSchema | None:
        self.asked.append(schema_id)
        if self.down:
            raise ScoringError("connection refused")
        return WriterSchema(schema_id, SchemaType.AVRO, SCHEMA) if schema_id < 100 else None


@dataclass
class Clock:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def gate(source: Source, clock: Clock) -> SchemaGate:
    return SchemaGate(SchemaBook(), source, Health(stall_s=30), backoff_max_s=1.0,
                      clock=lambda: clock.now, sleep=clock.sleep)


def test_each_id_is_asked_once_and_an_unknown_one_is_remembered() -> None:
    source, clock = Source(), Clock()
    g = gate(source, clock)
    batch: list[Any] = [wire(1), wire(1), wire(200), Msg(b"{}")]
    assert g.take(lambda: batch, 0.02) == batch
    assert g.take(lambda: [wire(1), wire(200)], 0.02) != []
    assert source.asked == [1, 200]
    assert isinstance(g.book.readers[200], Unusable)
    assert g.health.registry_ok


def test_an_outage_holds_the_batch_backs_off_and_releases_it_when_the_registry_answers() -> None:
    source, clock = Source(down=True), Clock()
    g = gate(source, clock)
    g.health.model_loaded = g.health.assigned = g.health.broker_ok = True
    polls: list[int] = []
    batch: list[Any] = [wire(1), wire(2)]

    def poll() -> list[Any]:
        polls.append(1)
        return batch

    for _ in range(200):  # 4 s of turns of at most 0.02 s each
        assert g.take(poll, 0.02) == []
    assert polls == [1]  # nothing more read while the batch waits
    assert not g.health.registry_ok and not g.health.ready()
    assert g.held == batch
    assert 0.2 < g.delay_s <= 1.0
    asked = len(source.asked)
    assert 4 <= asked <= 8  # 0.2, 0.4, 0.8, then every 1.0 s: not every turn
    source.down = False
    while (got := g.take(poll, 0.02)) == []:
        pass
    assert got == batch and polls == [1]
    assert g.health.registry_ok and g.health.ready()
    assert g.held == [] and g.delay_s == 0.0


def test_a_batch_held_for_the_registry_is_not_called_a_broker_outage() -> None:
    """While the gate holds a batch the loop polls nothing, so the clients report nothing;
    /readyz names the registry, not the broker (the chaos run's registry fault). The
    broker's own state still counts."""
    from worker.kafka_io.watch import BrokerWatch
    from worker.probes import WatchedHealth

    now = [100.0]
    watch = BrokerWatch(clock=lambda: now[0])
    health = WatchedHealth(stall_s=60, watch=watch, model_loaded=True, assigned=True,
                           clock=lambda: now[0])
    up = {"brokers": {"b1": {"nodeid": 1, "state": "UP"}}}
    watch.stats("consumer", up)
    health.turned()
    assert health.ready()
    now[0] += 10  # nothing reported for 10 s
    health.turned()
    assert health.not_ready() == ["broker not reachable"]  # silence alone: the broker's
    health.registry_ok = False
    assert health.not_ready() == ["schema registry not reachable"]
    watch.stats("consumer", {"brokers": {"b1": {"nodeid": 1, "state": "CONNECT"}}})
    assert health.not_ready() == ["broker not reachable", "schema registry not reachable"]
