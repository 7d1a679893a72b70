"""The thread of a background poller (the store's pointer, an MLflow alias) and the reload
events it hands the loop: the thread puts them, the loop takes them between two batches."""

from __future__ import annotations

import threading
from collections.abc import Callable

from worker.stream.reload import ReloadEvent


class PollThread:
    def __init__(self, name: str) -> None:
        self.name = name
        #: Set by ``close``; the poller waits on it between two looks.
        self.stop = threading.Event()
        self._events: list[ReloadEvent] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, event: ReloadEvent) -> None:
        with self._lock:
            self._events.append(event)

    def take(self) -> list[ReloadEvent]:
        """Events since the last call, oldest first (called by the loop)."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def start(self, target: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=target, name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
