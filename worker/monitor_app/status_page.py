"""The monitor's status page: ``/`` (one self-contained HTML file) and ``/api/status``.

The loop feeds the records it publishes into a ``StatusBoard`` (worker/monitor/status.py)
behind a lock; the HTTP thread renders the board's JSON on request. The page
(``status.html``, inline CSS and JS, charts drawn as inline SVG, nothing fetched but
``/api/status``) works on clusters without internet access. At start, ``seed`` refills
the history from what the group published lately, so a restart keeps the charts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources

import orjson

from worker.clock import wall_ms
from worker.kafka_io.config import connection
from worker.kafka_io.recent import read_recent
from worker.monitor.alerts import AlertRule
from worker.monitor.reasons import ReasonRow, reasons_status
from worker.monitor.segments import SegmentFigures, segments_status
from worker.monitor.status import SEEDED, Record, StatusBoard
from worker.monitor_app.settings import MonitorSettings
from worker.probes import Route

log = logging.getLogger(__name__)
#: How far back a firing alert is looked for at start: alert records are few (state changes
#: only), so a week (the default retention) is cheap and keeps long episodes on the page.
ALERTS_LOOKBACK_MS = 7 * 24 * 3600 * 1000

JSON = "application/json"
HTML = "text/html; charset=utf-8"


def page_html() -> bytes:
    return resources.files("worker.monitor_app").joinpath("status.html").read_bytes()


class StatusFeed:
    """The board behind a lock: the loop feeds it, the HTTP thread reads it."""

    def __init__(self, rules: Sequence[AlertRule], windows: Sequence[str], instance: str = "",
                 partitions: int = 1, clock_ms: Callable[[], int] = wall_ms) -> None:
        self._lock = threading.Lock()
        self._board = StatusBoard(rules, windows, instance, partitions)
        self._clock_ms = clock_ms
        self._page = page_html()
        self._segments = b'{"windows": []}'
        self._reasons = b'{"windows": []}'

    def metrics(self, partition: int, records: Iterable[Record]) -> None:
        with self._lock:
            self._board.on_metrics(partition, records)

    def alerts(self, partition: int, records: Iterable[Record]) -> None:
        with self._lock:
            self._board.on_alerts(partition, records)

    def join_stats(self, partition: int, record: bytes) -> None:
        with self._lock:
            self._board.on_join_stats(partition, record)

    def tick(self, now_ms: int, owned: Iterable[int]) -> None:
        with self._lock:
            self._board.tick(now_ms, owned)

    def segments(self, segments: Mapping[tuple[str, str, str], Sequence[SegmentFigures]]
                 ) -> None:
        """The segments table of this instance's latest tick (``/api/segments``)."""
        doc = orjson.dumps(segments_status(segments))
        with self._lock:
            self._segments = doc

    def reasons(self, tables: Mapping[tuple[str, str, str], Sequence[ReasonRow]]) -> None:
        """The top reasons behind alerts of this instance's latest tick (``/api/reasons``)."""
        doc = orjson.dumps(reasons_status(tables))
        with self._lock:
            self._reasons = doc

    @property
    def span_ms(self) -> int:
        return self._board.span_ms

    def status_json(self) -> bytes:
        with self._lock:
            doc = self._board.status(self._clock_ms())
        return orjson.dumps(doc)

    def routes(self) -> dict[str, Route]:
        """Extra routes for ``worker.probes.serve``."""
        return {
            "/": lambda: (200, self._page, HTML),
            "/api/status": lambda: (200, self.status_json(), JSON),
            "/api/segments": lambda: (200, self._segments, JSON),
            "/api/reasons": lambda: (200, self._reasons, JSON),
        }


def seed(feed: StatusFeed, s: MonitorSettings, now_ms: int) -> None:
    """Refill the page from the metrics and stats topics (the history span) and the alerts
    topic (the last week), so that a restarted monitor still shows the last hours and what
    fires. Best effort: a Kafka error
    leaves the page with what was read (a warning in the log), and the monitor runs on."""
    conn, since = connection(s, s.instance_id), now_ms - feed.span_ms
    t0 = time.monotonic()
    feed.metrics(SEEDED, read_recent(conn, s.metrics_topic, since))
    feed.alerts(SEEDED, read_recent(conn, s.alerts_topic, min(since, now_ms - ALERTS_LOOKBACK_MS)))
    stats = list(read_recent(conn, s.stats_topic, now_ms - 600_000))
    log.info("status page: history read back in %.2fs", time.monotonic() - t0)
    if stats:
        feed.join_stats(SEEDED, stats[-1][1])
