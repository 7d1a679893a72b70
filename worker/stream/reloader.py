"""The background thread of hot reload: watch the pointer and the control topic,
load and check candidates off the loop, hand results to the loop via ``take``.

The loop (Runner.turn) calls ``take`` between two batches and swaps there, so
every prediction carries the version that scored it and, within a partition,
the version changes once, at a batch boundary.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from worker import kafka_io
from worker.clock import wall_ms
from worker.config import Settings
from worker.errors import ConfigError, ScoringError
from worker.kafka_io import ControlRecord
from worker.kafka_io.config import Role, client_config, connection
from worker.model.store import CURRENT, is_model_folder, read_pointer
from worker.stream.reload import (
    Refusal,
    ReloadEvent,
    Request,
    ShadowSwap,
    Swap,
    attempt,
    check_candidate,
    newest,
    parse_control,
    parse_shadow,
    store_of,
)

log = logging.getLogger(__name__)


class ControlSource(Protocol):
    def poll(self, timeout_s: float) -> list[ControlRecord]: ...
    def close(self) -> None: ...



class Reloader:
    """Follows ``STORE/<name>/current`` and, optionally, a control topic."""

    def __init__(self, model_folder: Path, serving: str, poll_s: float,
                 control: ControlSource | None = None,
                 clock_ms: Callable[[], int] = wall_ms) -> None:  # fmt: skip
        self.store, self.name = store_of(model_folder)
        self.folder = model_folder
        self.serving = serving
        self.poll_s = poll_s
        self.control = control
        self.clock_ms = clock_ms
        self._pointer = self._pointer_state()
        # Instructions older than the pointer we started from are already superseded.
        self._last_at = self._pointer[0] // 1_000_000
        #: The shadow model the control topic asked for ("" before any such record).
        self.shadow: str | None = ""
        self._events: list[ReloadEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> list[ReloadEvent]:
        """Results since the last call, oldest first (called by the loop)."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-reload", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.control is not None:
            self.control.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the loop must keep serving whatever happens here
                log.exception("model reload watcher failed; retrying")
                self._stop.wait(self.poll_s)

    def step(self) -> None:
        """One round: gather instructions, act on the newest one."""
        requests = self._pointer_requests()
        if self.control is not None:
            records = self.control.poll(self.poll_s)
            requests += self._control_requests(records)
            self._shadow_step(records)
        else:
            self._stop.wait(self.poll_s)
        req = newest(requests, self._last_at)
        if req is None:
            return
        self._last_at = req.at_ms
        if req.version == self.serving:
            return
        log.info("loading %s %s (%s)", self.name, req.version, req.source)
        event = attempt(self.store, self.name, req, self.clock_ms())
        if isinstance(event, Swap):
            self.serving = req.version
        with self._lock:
            self._events.append(event)

    def _shadow_step(self, records: list[ControlRecord]) -> None:
        """The latest shadow instruction of this poll, loaded and checked like a swap."""
        wanted = [v for ok, v in (parse_shadow(r.value, self.name) for r in records) if ok]
        if not wanted or wanted[-1] == self.shadow:
            return
        version = self.shadow = wanted[-1]
        event: ReloadEvent
        if version is None:
            event = ShadowSwap(None, "control")
        else:
            log.info("loading shadow model %s %s (control)", self.name, version)
            try:
                event = ShadowSwap(check_candidate(self.store, self.name, version), "control")
            except ScoringError as exc:
                event = Refusal(self.name, version, " ".join(str(exc).split()),
                                self.clock_ms(), "control")  # fmt: skip
        with self._lock:
            self._events.append(event)

    def _pointer_state(self) -> tuple[int, str]:
        return (self.folder / CURRENT).stat().st_mtime_ns, read_pointer(self.folder)

    def _pointer_requests(self) -> list[Request]:
        try:
            state = self._pointer_state()
        except (OSError, ScoringError) as exc:
            log.warning("cannot read the model pointer: %s", exc)
            return []
        if state == self._pointer:
            return []
        self._pointer = state
        return [Request(state[1], state[0] // 1_000_000, "pointer")]

    def _control_requests(self, records: list[ControlRecord]) -> list[Request]:
        out: list[Request] = []
        for r in records:
            version = parse_control(r.value, self.name)
            if version is not None:
                out.append(Request(version, r.timestamp_ms, "control"))
        return out


def make_reloader(s: Settings, serving: str) -> Reloader | None:
    """A started-to-be reloader when ``s.model`` is a store folder; None otherwise."""
    folder = Path(s.model)
    if not is_model_folder(folder):
        if s.control_topic:
            raise ConfigError("--control-topic needs --model to be a store folder STORE/<name>")
        return None
    control = None
    if s.control_topic:
        conf = client_config(Role.CONTROL, connection(s, s.worker_id))
        control = kafka_io.ControlReader(conf, s.control_topic)
    return Reloader(folder, serving, s.model_poll_ms / 1000, control)
