"""Schema lookups before scoring: a batch reaches the runner once every schema id it names
is known, or known to be unknown; while the registry does not answer, the batch waits.

The decoder (worker/core/decoders/wire.py) is pure: it reads the ``SchemaBook`` this gate
fills. Each id is asked once: a schema is parsed and kept, an id the registry does not
know is remembered as unknown (its events become dead letters at once, never a stall).

An outage is not bad input. When a lookup fails (no connection, a timeout, a 5xx, a
refused credential) the batch in hand is held, unscored, uncommitted and not yet
admitted to the delivery guarantee; the loop keeps turning (outputs already queued are
still acknowledged and committed, /healthz stays 200) but reads nothing more, /readyz
answers 503, and the lookup is tried again after 0.2 s, 0.4 s, ... up to
``schema_registry_backoff_max_s``. When the registry answers, the held batch is scored
as if nothing happened. A worker stopped during an outage leaves the held events
uncommitted: they are read again after the restart. An outage longer than the
consumer's ``max.poll.interval.ms`` (5 minutes by default) makes the worker leave its
group; the events it held are then scored by whichever member gets their partitions,
and once more by this one when the registry answers (at-least-once: a repeat, never a
loss).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from worker.config import Settings
from worker.core.decoders import Decoder
from worker.core.decoders.wire import SchemaBook, WireDecoder, WriterSchema, schema_ids
from worker.errors import ScoringError
from worker.kafka_io import Message
from worker.probes import Health
from worker.wire_settings import require_registry

log = logging.getLogger(__name__)
FIRST_DELAY_S = 0.2


class SchemaFetcher(Protocol):
    url: str

    def fetch(self, schema_id: int) -> WriterSchema | None:
        """The schema, None when the registry has no such id; raises when it gives no
        answer (an outage)."""


@dataclass
class SchemaGate:
    book: SchemaBook
    source: SchemaFetcher
    health: Health
    backoff_max_s: float = 5.0
    #: What an outage raises (kafka_io.registry.RegistryUnavailable); a parameter, so that
    #: this module does not import the registry's client library.
    outage: type[Exception] = ScoringError
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    #: Which messages are in a wire format (None: all of them).
    carries: Callable[[Message], bool] | None = None
    held: list[Message] = field(default_factory=list)
    delay_s: float = 0.0
    next_try: float = 0.0
    down_since: float | None = None

    def take(self, poll: Callable[[], list[Message]], wait_s: float) -> list[Message]:
        """The next batch whose schemas are all looked up: the held one once the registry
        answers, else a fresh ``poll()``; [] while the registry does not answer (after
        waiting up to ``wait_s``, so the loop turns as usual)."""
        if self.held:
            left = self.next_try - self.clock()
            if left > 0:
                self.sleep(min(wait_s, left))
                return []
            msgs, self.held = self.held, []
        else:
            msgs = poll()
        if msgs and not self._look_up(msgs):
            self.held = msgs
            return []
        return msgs

    def _look_up(self, msgs: list[Message]) -> bool:
        carries = self.carries
        values = [m.value() for m in msgs if carries is None or carries(m)]
        try:
            look_up(self.book, self.source, values)
        except self.outage as exc:
            self._down(exc, len(msgs))
            return False
        if self.down_since is not None:
            log.warning("schema registry answers again after %.1fs; the %d events held "
                        "are scored now", self.clock() - self.down_since, len(msgs))
        self.down_since, self.delay_s = None, 0.0
        self.health.registry_ok = True
        return True

    def _down(self, exc: Exception, held: int) -> None:
        if self.down_since is None:
            self.down_since = self.clock()
            log.error("schema registry does not answer (%s): holding %d events, reading "
                      "nothing more until it does; /readyz is 503", exc, held)
        self.health.registry_ok = False
        self.delay_s = min(max(2 * self.delay_s, FIRST_DELAY_S), self.backoff_max_s)
        self.next_try = self.clock() + self.delay_s


def look_up(book: SchemaBook, source: SchemaFetcher, values: list[bytes | None]) -> None:
    """Fill ``book`` with the schemas ``values`` name that it does not know yet; raises
    what ``source`` raises when the registry gives no answer."""
    for schema_id in book.missing(schema_ids(values)):
        schema = source.fetch(schema_id)
        if schema is None:
            book.unknown(schema_id)
            log.warning("schema id %d is not in the registry: its records cannot be read",
                        schema_id)
        else:
            book.learn(schema)
            log.info("schema id %d (%s) fetched from %s", schema_id, schema.type.value,
                     source.url)


def look_up_waiting(book: SchemaBook, source: SchemaFetcher, values: list[bytes | None],
                    outage: type[Exception], keep_waiting: Callable[[float], bool],
                    backoff_max_s: float = 5.0, sleep: Callable[[float], None] = time.sleep,
                    ) -> None:
    """``look_up`` for the loops that cannot hold a batch aside (the monitor, ``retrain``):
    while the registry does not answer, wait and ask again (0.2 s, doubling up to
    ``backoff_max_s``) as long as ``keep_waiting(seconds waited)``; after that the outage
    is raised."""
    delay, waited = 0.0, 0.0
    while True:
        try:
            look_up(book, source, values)
            if waited:
                log.warning("schema registry answers again after %.1fs", waited)
            return
        except outage as exc:
            if not keep_waiting(waited):
                raise
            if not waited:
                log.error("schema registry does not answer (%s): waiting", exc)
            delay = min(max(2 * delay, FIRST_DELAY_S), backoff_max_s)
            sleep(delay)
            waited += delay


def build(s: Settings, decoder: Decoder, health: Health) -> SchemaGate | None:
    """The gate a wire-format decoder needs (None for the others)."""
    if not isinstance(decoder, WireDecoder):
        return None
    require_registry("--input-format", s.input_format, s.schema_registry)
    from worker.kafka_io.registry import RegistryUnavailable, SchemaSource, connection_of

    conn = connection_of(s)
    log.info("input format %s: schemas from %s", s.input_format, s.schema_registry)
    return SchemaGate(decoder.book, SchemaSource(conn), health,
                      s.schema_registry_backoff_max_s, RegistryUnavailable)
