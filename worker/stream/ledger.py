"""Which input offsets may be committed: the in-flight batches and their acknowledgements.

Pure bookkeeping, no I/O. Each consumed batch opens a ``Flight`` that counts its
outputs still waiting for the broker. Flights finish in any order, but offsets only
advance over the oldest flights that are all finished, so a partition's committed
offset never passes an event whose outputs (prediction, dead letter, shadow record)
the broker has not acknowledged: a crash at any moment repeats outputs, never loses
them.

With feature statistics under at-least-once (``hold``), an event's counts travel in a
later statistics flight than its outputs. A data flight's offsets are then held until a
*barrier* (the statistics flight, which takes over the offsets of every flight before
it) is acknowledged, so an offset never commits ahead of the counts of its events either:
a crash repeats counts, never loses them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from worker.errors import SendError
from worker.kafka_io import Message, PartitionId
from worker.kafka_io.clients import next_offsets
from worker.stream.outputs import Output
from worker.stream.sinks import Sent


@dataclass(slots=True, eq=False)
class Flight:
    """One consumed batch: its messages and outputs, the next offset per partition once
    it is done, and how many of its outputs are still unacknowledged."""

    msgs: Sequence[Message]
    ends: dict[PartitionId, int]
    events: int
    outputs: list[Output] = field(default_factory=list)
    #: Outputs queued and neither acknowledged nor given up on.
    pending: int = 0
    #: Refusals reported for this flight's records, by position in ``outputs``, handled
    #: by the loop.
    failures: list[tuple[int, SendError]] = field(default_factory=list)
    #: Owns the offsets of the flights before it (see ``Ledger.open_barrier``).
    barrier: bool = False

    def report(self, position: int, error: SendError | None, sent: Sent | None) -> None:
        """The delivery callback of the flight's outputs: each send passes this one
        callable and its output's position as the tag, so a refusal names its record."""
        if error is None:
            self.pending -= 1
        else:
            self.failures.append((position, error))


@dataclass
class Ledger:
    """Flights in consumption order and the offsets their acknowledgement made committable."""

    flights: deque[Flight] = field(default_factory=deque)
    #: Next offset to read per partition, acknowledged and not yet handed to a commit.
    ready: dict[PartitionId, int] = field(default_factory=dict)
    #: Events consumed whose flight is not finished (the in-flight bound counts these).
    events: int = 0
    #: Hold finished data flights' offsets in ``held`` until a barrier after them is
    #: finished (at-least-once with feature statistics).
    hold: bool = False
    #: Offsets of finished data flights that no barrier has taken over yet.
    held: dict[PartitionId, int] = field(default_factory=dict)

    def open(self, msgs: Sequence[Message]) -> Flight:
        flight = Flight(msgs, next_offsets(msgs), len(msgs))
        self.flights.append(flight)
        self.events += len(msgs)
        return flight

    def open_barrier(self) -> Flight | None:
        """A flight that takes over the offsets of every flight before it, committable
        once it and they are all finished; None when there are none to take over."""
        ends, self.held = self.held, {}
        for f in self.flights:  # consumption order: a later offset overwrites an earlier
            if f.ends:
                ends.update(f.ends)
                f.ends = {}
        if not ends:
            return None
        flight = Flight((), ends, 0, barrier=True)
        self.flights.append(flight)
        return flight

    def advance(self) -> bool:
        """Move finished flights at the front into ``ready``; True when any did. A
        finished flight further back lets go of its messages and outputs at once (only a
        refusal needs them): memory follows what is unacknowledged, not what waits."""
        moved = False
        flights, hold = self.flights, self.hold
        while flights and flights[0].pending <= 0 and not flights[0].failures:
            done = flights.popleft()
            (self.held if hold and not done.barrier else self.ready).update(done.ends)
            self.events -= done.events
            done.msgs, done.outputs = (), []
            moved = True
        for f in flights:
            if f.pending <= 0 and not f.failures and f.msgs:
                f.msgs, f.outputs = (), []
        return moved

    def failures(self) -> list[tuple[Flight, int, SendError]]:
        """Every refusal reported since the last call: its flight, position and error."""
        out: list[tuple[Flight, int, SendError]] = []
        for f in self.flights:
            if f.failures:
                out += [(f, position, err) for position, err in f.failures]
                f.failures = []
        return out

    def take(self) -> dict[PartitionId, int]:
        """The offsets to commit now (each handed out once)."""
        ready, self.ready = self.ready, {}
        return ready

    def forget(self, parts: Iterable[PartitionId]) -> None:
        """Partitions that are no longer ours: none of their offsets may be committed."""
        gone = set(parts)
        for tp in gone:
            self.ready.pop(tp, None)
            self.held.pop(tp, None)
        for f in self.flights:
            for tp in gone & f.ends.keys():
                del f.ends[tp]

    def clear(self) -> None:
        """Drop everything (exactly-once, after an abort: the events are read again)."""
        self.flights.clear()
        self.ready.clear()
        self.held.clear()
        self.events = 0

    @property
    def idle(self) -> bool:
        return not self.flights
