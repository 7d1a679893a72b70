"""Which input offsets may be committed: the in-flight batches and their acknowledgements.

Pure bookkeeping, no I/O. Each consumed batch opens a ``Flight`` that counts its
outputs still waiting for the broker. Flights finish in any order, but offsets only
advance over the oldest flights that are all finished, so a partition's committed
offset never passes an event whose outputs (prediction, dead letter, shadow record)
the broker has not acknowledged: a crash at any moment repeats outputs, never loses
them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from worker.errors import SendError
from worker.kafka_io import Message
from worker.stream.outputs import KEY, TOPIC, VALUE, Output
from worker.stream.sinks import Sent

TopicPartition = tuple[str, int]


@dataclass(slots=True, eq=False)
class Flight:
    """One consumed batch: its messages and outputs, the next offset per partition once
    it is done, and how many of its outputs are still unacknowledged."""

    msgs: Sequence[Message]
    ends: dict[TopicPartition, int]
    events: int
    outputs: list[Output] = field(default_factory=list)
    #: Outputs queued and neither acknowledged nor given up on.
    pending: int = 0
    #: Refusals reported for this flight's records, handled by the loop.
    failures: list[tuple[Sent, SendError]] = field(default_factory=list)
    _used: set[int] = field(default_factory=set)

    def report(self, error: SendError | None, sent: Sent | None) -> None:
        """The delivery callback of the flight's records (take ``flight.report`` once
        and hand that one object to every ``send``: see worker/stream/sinks)."""
        if error is None:
            self.pending -= 1
        else:
            self.failures.append((sent or ("", None, None), error))

    def find(self, sent: Sent) -> int:
        """The position in ``outputs`` of a refused record, by its content (-1: unknown).
        Records with equal content are told apart by handing each position out once;
        equal content gets an equal fallback, whichever input it names."""
        topic, value, key = sent
        for i, o in enumerate(self.outputs):
            if i not in self._used and o[TOPIC] == topic and o[KEY] == key and o[VALUE] == value:
                self._used.add(i)
                return i
        return -1

    def release(self, position: int) -> None:
        """The output at ``position`` goes out again (re-sent): it may be refused again."""
        self._used.discard(position)


@dataclass
class Ledger:
    """Flights in consumption order and the offsets their acknowledgement made committable."""

    flights: deque[Flight] = field(default_factory=deque)
    #: Next offset to read per partition, acknowledged and not yet handed to a commit.
    ready: dict[TopicPartition, int] = field(default_factory=dict)
    #: Events consumed whose flight is not finished (the in-flight bound counts these).
    events: int = 0

    def open(self, msgs: Sequence[Message]) -> Flight:
        ends: dict[TopicPartition, int] = {}
        for m in msgs:  # a partition's messages come in order: the last one wins
            ends[(m.topic() or "", m.partition() or 0)] = (m.offset() or 0) + 1
        flight = Flight(msgs, ends, len(msgs))
        self.flights.append(flight)
        self.events += len(msgs)
        return flight

    def advance(self) -> bool:
        """Move finished flights at the front into ``ready``; True when any did. A
        finished flight further back lets go of its messages and outputs at once (only a
        refusal needs them): memory follows what is unacknowledged, not what waits."""
        moved = False
        flights = self.flights
        while flights and flights[0].pending <= 0 and not flights[0].failures:
            done = flights.popleft()
            self.ready.update(done.ends)
            self.events -= done.events
            done.msgs, done.outputs = (), []
            moved = True
        for f in flights:
            if f.pending <= 0 and not f.failures and f.msgs:
                f.msgs, f.outputs = (), []
        return moved

    def failures(self) -> list[tuple[Flight, Sent, SendError]]:
        """Every refusal reported since the last call, with its flight."""
        out: list[tuple[Flight, Sent, SendError]] = []
        for f in self.flights:
            if f.failures:
                out += [(f, sent, err) for sent, err in f.failures]
                f.failures = []
        return out

    def take(self) -> dict[TopicPartition, int]:
        """The offsets to commit now (each handed out once)."""
        ready, self.ready = self.ready, {}
        return ready

    def forget(self, parts: Iterable[TopicPartition]) -> None:
        """Partitions that are no longer ours: none of their offsets may be committed."""
        gone = set(parts)
        for tp in gone:
            self.ready.pop(tp, None)
        for f in self.flights:
            for tp in gone & f.ends.keys():
                del f.ends[tp]

    def clear(self) -> None:
        """Drop everything (exactly-once, after an abort: the events are read again)."""
        self.flights.clear()
        self.ready.clear()
        self.events = 0

    @property
    def idle(self) -> bool:
        return not self.flights
