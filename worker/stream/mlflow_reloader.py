"""Hot reload from an MLflow alias: the background thread that asks MLflow where
``models:/NAME@ALIAS`` points, makes the new version a bundle (worker/model/mlflow_source.py)
and checks it off the loop, then hands a ``Swap`` or a ``Refusal`` to the loop, which
applies it between two batches exactly as it applies a store promotion
(worker/stream/swap.py).

A tracking server that does not answer changes nothing: the worker keeps serving what it
has, says so once a minute, and polls on; when the server answers again it says that too.
A version that fails is refused once (announced on the alerts topic by the loop) and not
tried again until the alias moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from worker.clock import wall_ms
from worker.errors import ScoringError
from worker.mlflow_ref import ModelRef, parse_ref
from worker.model.mlflow_source import MlflowSource, TrackingUnavailable, load_version
from worker.stream.poll_thread import PollThread
from worker.stream.reload import Refusal, ReloadEvent, Swap

log = logging.getLogger(__name__)
SOURCE: Final = "mlflow"
WARN_EVERY_S: Final = 60.0


class MlflowReloader:
    """Follows ``ref``'s alias every ``poll_s`` seconds."""

    def __init__(self, source: MlflowSource, ref: ModelRef, serving: str, poll_s: float,
                 clock_ms: Callable[[], int] = wall_ms,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.source, self.ref, self.serving, self.poll_s = source, ref, serving, poll_s
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

    def _run(self) -> None:
        while not self.poller.stop.wait(self.poll_s):
            try:
                self.step()
            except Exception:  # the loop must keep serving whatever happens here
                log.exception("MLflow reload watcher failed; retrying")

    def step(self) -> None:
        """One round: where does the alias point; a new version is loaded and checked."""
        try:
            version = self.source.resolve(self.ref)
            if version != self.seen:
                self._attempt(version)
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

    def _attempt(self, version: str) -> None:
        log.info("loading %s %s (%s moved)", self.ref.name, version, self.ref.uri)
        event: ReloadEvent
        try:
            event = Swap(load_version(self.source, self.ref.name, version), SOURCE)
        except TrackingUnavailable:
            raise  # not the version's fault: tried again at the next poll
        except ScoringError as exc:
            event = Refusal(self.ref.name, version, " ".join(str(exc).split()),
                            self.clock_ms(), SOURCE)
        self.seen = version
        if isinstance(event, Swap):
            self.serving = version
        self.poller.put(event)

    def _unavailable(self, exc: ScoringError) -> None:
        now = self.monotonic()
        if self._down_since is None:
            self._down_since = now
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("cannot follow %s; still serving %s %s: %s", self.ref.uri,
                        self.ref.name, self.serving, exc,
                        extra={"model": self.ref.name, "model_version": self.serving})


def make_mlflow_reloader(source: MlflowSource, model: str, serving: str,
                         poll_s: float) -> MlflowReloader | None:
    """A reloader for models:/NAME@ALIAS; None for a fixed models:/NAME/VERSION."""
    ref = parse_ref(model)
    return None if ref.alias is None else MlflowReloader(source, ref, serving, poll_s)
