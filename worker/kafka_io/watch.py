"""Whether the worker reaches its brokers, from its clients' statistics and error callbacks.

/readyz reads ``up``. Each client reports at its own pace (librdkafka serves the
callbacks only while the loop polls that client), so the consumer's view wins while
it is fresh and the producer's takes over when the loop stopped reading because its
outputs wait for the broker. A lost connection is logged once when the state changes,
and once more with the count of connection errors when it comes back: never once per
reconnection attempt (librdkafka retries several times a second).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

#: How often a watched client reports statistics: /readyz follows the broker within ~2 s.
HEALTH_STATS_MS = 1000
#: Errors that only say a connection failed; librdkafka reconnects by itself.
CONNECTION_ERRORS = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                               KafkaError._RESOLVE, KafkaError._TIMED_OUT})
#: librdkafka's own log lines about the same failures (counted here instead). Not the
#: consumer group's "session timed out ... rejoining group": that one says the member lost
#: its partitions, which the watch's state does not.
_TRANSPORT_LINE = re.compile(
    r"Connect to .* failed|Connection refused|Disconnected|brokers are down|"
    r"Receive failed|Send failed|Failed to resolve|(?<!session )timed out|Connection reset"
)


def brokers_up(stats: Mapping[str, Any]) -> bool:
    """Whether librdkafka's statistics show at least one broker connection up."""
    brokers = stats.get("brokers", {}).values()
    return any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)


@dataclass
class _Report:
    up: bool
    at: float


@dataclass
class BrokerWatch:
    """Connection state of the worker's clients (consumer first, then producer)."""

    #: A client's report older than this no longer decides the state.
    fresh_s: float = 3.0
    #: Whose fresh report decides, first to last: the consumer's connections carry
    #: heartbeats and fetches, so they are never idle; an idle producer's may be.
    priority: tuple[str, ...] = ("consumer", "producer")
    clock: Callable[[], float] = time.monotonic
    #: Called with the new state on every change (the probes' readiness).
    on_change: Callable[[bool], None] = lambda up: None
    up: bool = True
    errors: int = 0
    _reports: dict[str, _Report] = field(default_factory=dict)
    #: Clients replaced lately (``replaced``): until when they are still connecting.
    _connecting_until: dict[str, float] = field(default_factory=dict)
    #: When each client last reported a broker connection up (or was replaced). A client
    #: not in it has never been connected: still connecting, it says nothing.
    _last_up: dict[str, float] = field(default_factory=dict)
    _since: float = 0.0
    _last_error: str = ""

    #: No report at all for this long (the loop waits inside a call to a broker that went
    #: away, so no callback is served) also counts as not connected.
    silent_s: float = 3.0

    def current(self) -> bool:
        """The state for /readyz: up, and some client reported lately."""
        if not self._reports:
            return self.up
        latest = max(r.at for r in self._reports.values())
        return self.up and self.clock() - latest <= self.silent_s

    def stats(self, client: str, stats: Mapping[str, Any]) -> None:
        """A client's statistics (librdkafka's stats_cb, parsed)."""
        up = brokers_up(stats)
        if up:
            self._last_up[client] = self.clock()
        elif self.clock() < self._connecting_until.get(client, -math.inf):
            return
        if up or client in self._last_up:
            self._report(client, up)

    def error(self, client: str, err: KafkaError) -> bool:
        """A client's error callback; True when it was a connection error (handled here)."""
        if err.code() not in CONNECTION_ERRORS:
            return False
        self.errors += 1
        self._last_error = err.str()
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._report(client, False)
        return True

    def replaced(self, client: str) -> None:
        """``client`` is a new client under the old one's name: for ``fresh_s`` its reports
        of no connection say nothing (its first one, before it had connected, said "lost
        the connection to every broker" for a second); after that they count, so a
        replacement during an outage still turns readiness."""
        self._connecting_until[client] = self.clock() + self.fresh_s
        if client in self._last_up:  # a new client is given its own time (``stranded``)
            self._last_up[client] = self.clock()

    def stranded(self, client: str, other: str, after_s: float) -> bool:
        """Whether ``client`` has had no broker connection for ``after_s`` while ``other``,
        a client of the same process, has one now: the broker is there and ``client``
        is stuck (a chaos hour's consumer reported no connection for 8 minutes after a
        broker pause while the other workers scored)."""
        now, last = self.clock(), self._last_up.get(client)
        mine, theirs = self._reports.get(client), self._reports.get(other)
        return (last is not None and now - last >= after_s
                and mine is not None and not mine.up and now - mine.at <= self.fresh_s
                and theirs is not None and theirs.up and now - theirs.at <= self.fresh_s)

    def answered(self, client: str) -> None:
        """A broker answered a request of ``client`` made outside its callbacks (a probe
        while a call blocks them)."""
        self._last_up[client] = self.clock()
        self._report(client, True)

    def _report(self, client: str, up: bool) -> None:
        now = self.clock()
        self._reports[client] = _Report(up, now)
        ordered = [self._reports[c] for c in self.priority if c in self._reports]
        fresh = [r for r in ordered if now - r.at <= self.fresh_s]
        state = (fresh or [max(ordered, key=lambda r: r.at)])[0].up
        if state != self.up:
            self._change(state, now)

    def _change(self, up: bool, now: float) -> None:
        if up:
            log.info("broker connection restored after %.1fs (%d connection errors meanwhile)",
                     now - self._since, self.errors)
        else:
            log.warning("lost the connection to every broker: %s; retrying (logged again "
                        "when it is back)", self._last_error or "no broker up")
        self.up, self._since, self.errors = up, now, 0
        self.on_change(up)


class TransportNoise(logging.Filter):
    """Drops librdkafka's per-attempt connection failure lines (BrokerWatch logs the state)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _TRANSPORT_LINE.search(record.getMessage())


def quiet_transport_lines(logger_name: str = "librdkafka") -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, TransportNoise) for f in logger.filters):
        logger.addFilter(TransportNoise())


def reporting(conf: Mapping[str, Any], watch: BrokerWatch | None, client: str,
              ) -> dict[str, Any]:
    """``conf`` with its client's statistics feeding ``watch`` every ``HEALTH_STATS_MS`` (the
    connection state for /readyz and the two log lines of an outage); unchanged without a
    watch. Only statistics: the error callback would take the errors that the caller
    reads from its ``consume()`` (a fence, a fatal error)."""
    if watch is None:
        return dict(conf)
    return {**conf, "statistics.interval.ms": HEALTH_STATS_MS,
            "stats_cb": lambda stats: watch.stats(client, orjson.loads(stats))}
