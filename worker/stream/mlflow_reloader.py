"""Hot reload from an MLflow alias: the background thread that asks MLflow where
``models:/NAME@ALIAS`` points, makes the new version a bundle (worker/model/mlflow_source.py)
and checks it off the loop, then hands a ``Swap`` or a ``Refusal`` to the loop, which
applies it between two batches exactly as it applies a store promotion
(worker/stream/swap.py).

A tracking server that does not answer changes nothing: the worker keeps serving what it
has, says so once a minute, and polls on; when the server answers again it says that too.
A version that fails is refused once (announced on the alerts topic by the loop) and not
tried again until the alias moves.

With a control topic (``Fleet``) the fleet swaps together: the first worker to see the
alias move loads the new version and, once it passed its checks, publishes a control
record naming it (``model_control.announce``: the topic's highest sequence plus one);
every worker reads the topic continuously and swaps on the record instead of waiting for
its own next poll. The alias stays the truth: a worker that sees the alias differ from
what the fleet serves publishes again, so racing announcements converge on the alias.
Records already on the topic at start are history (the alias was just resolved).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from worker.clock import wall_ms
from worker.errors import ScoringError
from worker.kafka_io import ControlRecord
from worker.kafka_io.control import ControlSource
from worker.mlflow_ref import ModelRef, parse_ref
from worker.model.mlflow_source import MlflowSource, TrackingUnavailable, load_version
from worker.stream.poll_thread import PollThread
from worker.stream.reload import Refusal, ReloadEvent, Request, Swap, newest, parse_control

log = logging.getLogger(__name__)
SOURCE: Final = "mlflow"
WARN_EVERY_S: Final = 60.0
#: Longest wait for control records, so that an alias poll is never late by more.
CONTROL_WAIT_S: Final = 0.5


@dataclass
class Fleet:
    """The control topic a fleet following one alias shares: ``reader`` reads it from the
    start, ``publish(version)`` announces a version and returns the record's sequence, and
    ``last`` is the highest sequence in force (what the topic held at start)."""

    reader: ControlSource
    publish: Callable[[str], int]
    last: int = 0

    def announce(self, version: str) -> None:
        try:
            self.last = max(self.last, self.publish(version))
        except Exception as exc:  # each worker still follows the alias itself
            log.warning("could not tell the fleet about version %s on the control topic: %s",
                        version, " ".join(str(exc).split()))


class MlflowReloader:
    """Follows ``ref``'s alias every ``poll_s`` seconds."""

    def __init__(self, source: MlflowSource, ref: ModelRef, serving: str, poll_s: float,
                 clock_ms: Callable[[], int] = wall_ms,
                 monotonic: Callable[[], float] = time.monotonic,
                 fleet: Fleet | None = None) -> None:
        self.source, self.ref, self.serving, self.poll_s = source, ref, serving, poll_s
        self.fleet = fleet
        self.clock_ms, self.monotonic = clock_ms, monotonic
        #: The version the alias pointed to at the last answer (tried once per move).
        self.seen = serving
        self._down_since: float | None = None
        self._warned_at = float("-inf")
        self.poller = PollThread("mlflow-reload")

    def take(self) -> list[ReloadEvent]:
        """Results since the last call, oldest first (called by the loop)."""
        return self.poller.take()

    def start(self) -> None:
        self.poller.start(self._run)

    def close(self) -> None:
        self.poller.close()
        if self.fleet is not None:
            self.fleet.reader.close()

    def _run(self) -> None:
        due = self.monotonic() + self.poll_s
        while not self.poller.stop.is_set():
            try:
                wait = max(0.0, due - self.monotonic())
                if self.fleet is None:
                    self.poller.stop.wait(wait)
                else:
                    self.follow(self.fleet.reader.poll(min(wait, CONTROL_WAIT_S)))
                if self.monotonic() >= due and not self.poller.stop.is_set():
                    due = self.monotonic() + self.poll_s
                    self.step()
            except Exception:  # the loop must keep serving whatever happens here
                log.exception("MLflow reload watcher failed; retrying")
                self.poller.stop.wait(1.0)

    def follow(self, records: list[ControlRecord]) -> None:
        """The fleet's newest instruction among ``records``, loaded and checked like an
        alias move (what another worker saw first)."""
        if self.fleet is None:
            return
        found = [Request(p[0], r.timestamp_ms, "control", p[1]) for r in records
                 if (p := parse_control(r.value, self.ref.name)) is not None]
        req = newest(found, (self.fleet.last, 0))
        if req is None:
            return
        self.fleet.last = max(self.fleet.last, req.sequence)
        if req.version != self.serving:
            log.info("loading %s %s (control, sequence %d)", self.ref.name, req.version,
                     req.sequence)
            try:
                self._attempt(req.version, "control")
            except TrackingUnavailable as exc:  # the alias poll catches up once it answers
                self._unavailable(exc)

    def step(self) -> None:
        """One round: where does the alias point; a new version is loaded and checked."""
        try:
            version = self.source.resolve(self.ref)
            if version != self.seen and version == self.serving:
                self.seen = version  # the fleet got here first
            elif version != self.seen:
                log.info("loading %s %s (%s moved)", self.ref.name, version, self.ref.uri)
                if self._attempt(version, SOURCE) and self.fleet is not None:
                    self.fleet.announce(version)
        except TrackingUnavailable as exc:
            self._unavailable(exc)
            return
        except ScoringError as exc:  # the model or alias is gone: keep what we serve
            self._unavailable(exc)
            return
        if self._down_since is not None:
            log.info("MLflow answers again after %.0f s; following %s",
                     self.monotonic() - self._down_since, self.ref.uri)
            self._down_since = None

    def _attempt(self, version: str, source: str) -> bool:
        """Load and check ``version``; hand the loop its Swap or Refusal; True: swapped."""
        event: ReloadEvent
        try:
            event = Swap(load_version(self.source, self.ref.name, version), source)
        except TrackingUnavailable:
            raise  # not the version's fault: tried again at the next poll
        except ScoringError as exc:
            event = Refusal(self.ref.name, version, " ".join(str(exc).split()),
                            self.clock_ms(), source)
        self.seen = version
        if isinstance(event, Swap):
            self.serving = version
        self.poller.put(event)
        return isinstance(event, Swap)

    def _unavailable(self, exc: ScoringError) -> None:
        now = self.monotonic()
        if self._down_since is None:
            self._down_since = now
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("cannot follow %s; still serving %s %s: %s", self.ref.uri,
                        self.ref.name, self.serving, exc,
                        extra={"model": self.ref.name, "model_version": self.serving})


def make_mlflow_reloader(source: MlflowSource, model: str, serving: str, poll_s: float,
                         fleet: Callable[[str], Fleet] | None = None) -> MlflowReloader | None:
    """A reloader for models:/NAME@ALIAS (``fleet(name)``: its control topic, or None); None
    for a fixed models:/NAME/VERSION."""
    ref = parse_ref(model)
    if ref.alias is None:
        return None
    return MlflowReloader(source, ref, serving, poll_s,
                          fleet=None if fleet is None else fleet(ref.name))
