"""The HTTP face of a process: /metrics, /healthz and /readyz (worker and monitor).

Health is what the loop reports and the probes read: /healthz says whether the
loop still turns, /readyz whether the process can do its job right now.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from worker.errors import ConfigError
from worker.kafka_io.watch import BrokerWatch

#: An extra page: called on the HTTP thread, returns (status code, body, content type).
Route = Callable[[], tuple[int, bytes, str]]


@dataclass
class RestoreProgress:
    """What the changelog restores have read (the monitor's): records replayed since the
    start, and the offsets done and to do of the restores under way."""

    records: int = 0
    done: int = 0
    total: int = 0
    running: int = 0
    #: Called whenever a restore reads more: the loop is not stuck, it is restoring.
    on_advance: Callable[[], None] | None = None

    def started(self, offsets: int) -> None:
        """A restore of ``offsets`` offsets (a partition's log from where it starts) begins."""
        self.running += 1
        self.total += offsets

    def advanced(self, records: int, offsets: int) -> None:
        self.records += records
        self.done += offsets
        if self.on_advance is not None:
            self.on_advance()

    def finished(self) -> None:
        self.running -= 1
        if self.running == 0:
            self.done = self.total = 0

    def share(self) -> float:
        """The share of the restores under way that is done; 1.0 when none runs."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


@dataclass
class Health:
    """What the probes report; the loop updates it, the HTTP thread reads it."""

    stall_s: float
    clock: Callable[[], float] = time.monotonic
    last_turn: float = field(default_factory=time.monotonic)
    model_loaded: bool = False
    assigned: bool = False
    broker_ok: bool = False
    #: False while the schema registry does not answer (the wire formats' lookups).
    registry_ok: bool = True
    #: A restore that moves forward counts as a loop turn (liveness), and a process that
    #: is restoring is not ready.
    restore: RestoreProgress = field(default_factory=RestoreProgress)

    def __post_init__(self) -> None:
        self.restore.on_advance = self.turned

    def turned(self) -> None:
        self.last_turn = self.clock()

    def healthy(self) -> bool:
        return self.clock() - self.last_turn <= self.stall_s

    def serving(self) -> bool:
        """Ready but for owning partitions: what ``run --processes`` asks of each process
        (one beyond the input's partition count owns none and stands by)."""
        return (self.model_loaded and self.broker_ok and self.registry_ok
                and self.restore.running == 0)

    def ready(self) -> bool:
        return self.serving() and self.assigned

    def not_ready(self) -> list[str]:
        """Why /readyz says 503, one phrase a condition (empty: ready), for the body of
        the 503: an on-call engineer reading a probe learns which condition to chase."""
        if self.ready():  # also refreshes what a subclass reads at each probe
            return []
        reasons = [text for failing, text in (
            (not self.model_loaded, "model not loaded"),
            (not self.broker_ok, "broker not reachable"),
            (not self.registry_ok, "schema registry not reachable"),
            (self.restore.running > 0,
             f"restoring state ({self.restore.share():.0%} done)"),
            (not self.assigned, "no partitions assigned"),
        ) if failing]
        return reasons or ["not ready"]


@dataclass
class WatchedHealth(Health):
    """Readiness asks the broker watch at each probe (its silence counts too, unless a
    registry outage is why the loop reads nothing: the chaos run's workers said "broker
    not reachable" while they held a batch for a paused registry)."""

    watch: BrokerWatch | None = None

    def serving(self) -> bool:
        if self.watch is not None:
            self.broker_ok = self.watch.current() if self.registry_ok else self.watch.up
        return super().serving()


def serve(port: int, registry: CollectorRegistry, health: Health,
          host: str = "0.0.0.0", *,
          routes: Mapping[str, Route] | None = None) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on a daemon thread, plus ``routes``: extra pages
    by exact path (query string ignored), such as the monitor's status page.

    ``host`` 0.0.0.0 (every interface) suits a container, whose probes and scraper come
    from outside; 127.0.0.1 keeps the endpoints on a laptop's loopback. A port taken by
    another process is a ConfigError naming the port and the settings to change.
    """
    extra = dict(routes or {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = extra.get(self.path.split("?", 1)[0])
            if route is not None:
                self._send(*route())
            elif self.path.startswith("/metrics"):
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                ok = health.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
            elif self.path.startswith("/readyz"):
                reasons = health.not_ready()
                body = f"not ready: {'; '.join(reasons)}\n" if reasons else "ready\n"
                self._send(503 if reasons else 200, body.encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes hit these endpoints every few seconds; keep them out of the logs

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--metrics-port {port}: {host}:{port} is already in use, perhaps by another "
                "worker on this host (give each process its own --metrics-port, or 0 to "
                "turn the HTTP server off)") from None
        raise ConfigError(f"--metrics-host {host} --metrics-port {port}: cannot listen there "
                          f"({exc.strerror or exc}; 0.0.0.0 or 127.0.0.1 always work)") from None
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
