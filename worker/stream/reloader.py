"""The background thread of hot reload: watch the pointer and the control topic,
load and check candidates off the loop, hand results to the loop via ``take``.

The loop (Runner.turn) calls ``take`` between two batches and swaps there, so
every prediction carries the version that scored it and, within a partition,
the version changes once, at a batch boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from worker import kafka_io
from worker.clock import wall_ms
from worker.config import Settings
from worker.errors import ConfigError, ScoringError
from worker.kafka_io import ControlRecord
from worker.kafka_io.config import Role, client_config, connection
from worker.kafka_io.control import ControlSource
from worker.mlflow_ref import is_mlflow_model
from worker.model.store import CURRENT, Pointer, is_model_folder, read_pointer_state
from worker.stream.poll_thread import PollThread
from worker.stream.reload import (
    Refusal,
    ReloadEvent,
    Request,
    ShadowSwap,
    Swap,
    attempt,
    check_candidate,
    newest,
    newest_shadow,
    parse_control,
    parse_shadow,
    store_of,
)

if TYPE_CHECKING:
    from worker.stream.mlflow_reloader import Fleet

log = logging.getLogger(__name__)


class Reloader:
    """Follows ``STORE/<name>/current`` and, optionally, a control topic."""

    def __init__(self, model_folder: Path, serving: str, poll_s: float,
                 control: ControlSource | None = None,
                 clock_ms: Callable[[], int] = wall_ms,
                 allow_pickle: bool = False, threads: int = 1) -> None:
        self.store, self.name = store_of(model_folder, allow_pickle, threads)
        self.folder = model_folder
        self.serving = serving
        self.poll_s = poll_s
        self.control = control
        self.clock_ms = clock_ms
        self._pointer = self._pointer_state()
        # Instructions below the pointer we started from are already superseded.
        self._last = self._request(self._pointer).order
        self._disagreement: tuple[str, str] | None = None
        #: The shadow model the control topic asked for ("" before any such record), and
        #: the sequence of that instruction (-1: none yet).
        self.shadow: str | None = ""
        self._shadow_last = -1
        self.poller = PollThread("model-reload")

    def take(self) -> list[ReloadEvent]:
        """Results since the last call, oldest first (called by the loop)."""
        return self.poller.take()

    def start(self) -> None:
        self.poller.start(self._run)

    def close(self) -> None:
        self.poller.close()
        if self.control is not None:
            self.control.close()

    def _run(self) -> None:
        while not self.poller.stop.is_set():
            try:
                self.step()
            except Exception:  # the loop must keep serving whatever happens here
                log.exception("model reload watcher failed; retrying")
                self.poller.stop.wait(self.poll_s)

    def step(self) -> None:
        """One round: gather instructions, act on the newest one."""
        requests = self._pointer_requests()
        if self.control is not None:
            records = self.control.poll(self.poll_s)
            requests += self._control_requests(records)
            self._shadow_step(records)
        else:
            self.poller.stop.wait(self.poll_s)
        self._warn_unordered(requests)
        req = newest(requests, self._last)
        if req is not None:
            self._last = req.order
            if req.version != self.serving:
                log.info("loading %s %s (%s, sequence %d)", self.name, req.version,
                         req.source, req.sequence)
                event = attempt(self.store, self.name, req, self.clock_ms())
                if isinstance(event, Swap):
                    self.serving = req.version
                self.poller.put(event)
        self._check_agreement()

    def _shadow_step(self, records: list[ControlRecord]) -> None:
        """The shadow instruction to follow among this poll's records (highest sequence,
        ``newest_shadow``), loaded and checked like a swap."""
        found = [i for i in (parse_shadow(r.value, self.name) for r in records) if i is not None]
        if self._shadow_last > 0:
            for i in found:
                if i.sequence == 0:
                    log.warning("shadow control record for %s has no sequence; shadow "
                                "instruction %d is in force, so it is ignored (publish with "
                                "models shadow)", self.name, self._shadow_last)
        chosen = newest_shadow(found, self._shadow_last)
        if chosen is None:
            return
        self._shadow_last = chosen.sequence
        if chosen.version == self.shadow:
            return
        version = self.shadow = chosen.version
        event: ReloadEvent
        if version is None:
            event = ShadowSwap(None, "control")
        else:
            log.info("loading shadow model %s %s (control, shadow sequence %d)", self.name,
                     version, chosen.sequence)
            try:
                event = ShadowSwap(check_candidate(self.store, self.name, version), "control")
            except ScoringError as exc:
                event = Refusal(self.name, version, " ".join(str(exc).split()),
                                self.clock_ms(), "control")
        self.poller.put(event)

    def _warn_unordered(self, requests: list[Request]) -> None:
        if self._last[0] == 0:
            return
        for r in requests:
            if r.source == "control" and r.sequence == 0:
                log.warning("control record for %s %s has no sequence; instruction %d is in "
                            "force, so it is ignored (publish with models promote "
                            "--control-topic, or give a higher sequence)", self.name,
                            r.version, self._last[0])

    def _check_agreement(self) -> None:
        """Log once each time what is served and what ``current`` says start to differ."""
        pointed = self._pointer[1].version
        state = None if pointed == self.serving else (self.serving, pointed)
        if state is not None and state != self._disagreement:
            log.warning("serving %s %s while %s says %s (a newer control record or a "
                        "bundle that did not load)", self.name, self.serving, self.folder / CURRENT,
                        pointed, extra={"model": self.name, "model_version": self.serving,
                                        "current": pointed})
        self._disagreement = state

    def _pointer_state(self) -> tuple[int, Pointer]:
        return (self.folder / CURRENT).stat().st_mtime_ns, read_pointer_state(self.folder)

    @staticmethod
    def _request(state: tuple[int, Pointer]) -> Request:
        mtime_ns, pointer = state
        return Request(pointer.version, mtime_ns // 1_000_000, "pointer", pointer.sequence)

    def _pointer_requests(self) -> list[Request]:
        try:
            state = self._pointer_state()
        except (OSError, ScoringError) as exc:
            log.warning("cannot read the model pointer: %s", exc)
            return []
        if state == self._pointer:
            return []
        self._pointer = state
        return [self._request(state)]

    def _control_requests(self, records: list[ControlRecord]) -> list[Request]:
        out: list[Request] = []
        for r in records:
            parsed = parse_control(r.value, self.name)
            if parsed is not None:
                out.append(Request(parsed[0], r.timestamp_ms, "control", parsed[1]))
        return out


class Watcher(Protocol):
    """What the loop's hot reload runs: a store's (Reloader) or an MLflow alias's."""

    def take(self) -> list[ReloadEvent]: ...
    def start(self) -> None: ...
    def close(self) -> None: ...


def _fleet(s: Settings, name: str) -> Fleet:
    """The control topic of a fleet that follows an MLflow alias (mlflow_reloader.py)."""
    from worker import model_control
    from worker.stream.mlflow_reloader import Fleet

    target = model_control.ControlTopic(s.control_topic, connection(s, s.worker_id))
    reader = kafka_io.ControlReader(client_config(Role.CONTROL, target.connection),
                                    s.control_topic)
    return Fleet(reader, partial(model_control.announce, name, target=target),
                 model_control.published(target, name).promote)


def make_reloader(s: Settings, serving: str) -> Watcher | None:
    """A started-to-be reloader when ``s.model`` is a store folder or an MLflow alias;
    None otherwise."""
    if is_mlflow_model(s.model):
        from worker.model.mlflow_source import MlflowSource
        from worker.stream.mlflow_reloader import make_mlflow_reloader

        source = MlflowSource(s.mlflow_tracking_uri, Path(s.mlflow_cache), s.allow_pickle,
                              s.model_threads)
        fleet = partial(_fleet, s) if s.control_topic else None
        return make_mlflow_reloader(source, s.model, serving, s.mlflow_poll_ms / 1000, fleet)
    folder = Path(s.model)
    if not is_model_folder(folder):
        if s.control_topic:
            raise ConfigError("--control-topic needs --model to be a store folder STORE/<name>")
        return None
    control = None
    if s.control_topic:
        conf = client_config(Role.CONTROL, connection(s, s.worker_id))
        control = kafka_io.ControlReader(conf, s.control_topic)
    return Reloader(folder, serving, s.model_poll_ms / 1000, control,
                    allow_pickle=s.allow_pickle, threads=s.model_threads)
