"""The status page's figures: a bounded history of what stage two publishes.

Fed with the very records the monitor publishes (model-metrics records of windows as they
change and of the rolling view every tick, alert records, the join-stats record), each with
the stage-two partition that made it. Keeps per model version the latest record of each
tumbling window and the rolling view's figures tick by tick, both bounded by age
(``span_ms``) and by count (``max_points``), and renders the JSON of ``/api/status``
(``schemas/status.schema.json``). An instance owning only some stage-two partitions knows
only the model versions (and the join counters) those partitions hold; ``tick`` forgets what
moved to another instance and the JSON says which partitions it covers. After a restart
the shell refills it from the topics (partition ``SEEDED``): a seeded model version is
adopted by the first live record of it and forgotten if none comes once partitions are owned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from worker.monitor.alerts import AlertRule
from worker.monitor.windows import HOUR_MS, ROLLING

CHART_METRICS: Final = ("accuracy", "precision", "recall", "roc_auc", "psi", "coverage")
#: Charted figures drawn with their estimate (``est_<name>``) on the same chart.
ESTIMATED: Final = ("precision", "recall", "roc_auc")
POINT_FIELDS: Final = (*CHART_METRICS, *(f"est_{m}" for m in ESTIMATED), "count", "predicted")
#: Label maturity is drawn for the windows that ended within the last week.
MATURITY_SPAN_MS: Final = 7 * 24 * HOUR_MS
MAX_MATURITY_WINDOWS: Final = 400
DEFAULT_SPAN_MS: Final = 6 * HOUR_MS
DEFAULT_MAX_POINTS: Final = 720
MAX_ALERT_EVENTS: Final = 200
SEEDED: Final = -1  # records read back from the topics at start: their partition is unknown
Record = tuple[Any, bytes]  # (Kafka key, JSON value), as the stages return them


@dataclass
class History:
    """What is known of one model version."""

    partition: int
    task: str | None = None
    rolling: dict[str, Any] | None = None  # the latest rolling-view record
    #: The rolling view's figures over time, at least ``step_ms`` apart: the newest point is
    #: replaced by the next one until it is a step past the one before, so the line always
    #: ends at the current figures.
    points: list[dict[str, Any]] = field(default_factory=list)
    step_ms: int = 0
    windows: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: Per window size and start: the latest maturity curve of each window of the last week.
    maturity: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class StatusBoard:
    """The status page's state. Pure: time comes in as epoch milliseconds."""

    rules: Sequence[AlertRule]
    windows: Sequence[str]
    instance: str = ""
    partitions: int = 1
    span_ms: int = DEFAULT_SPAN_MS
    max_points: int = DEFAULT_MAX_POINTS
    min_step_ms: int = 1000
    models: dict[tuple[str, str], History] = field(default_factory=dict)
    firing: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    alert_events: list[dict[str, Any]] = field(default_factory=list)
    join: tuple[int, dict[str, Any]] | None = None  # (partition, join-stats record)
    owned: tuple[int, ...] = ()

    # -- feeding ------------------------------------------------------------------------
    def on_metrics(self, partition: int, records: Iterable[Record]) -> None:
        """Model-metrics records: the rolling view, or a tumbling window that changed."""
        for rec in _readable(records, "window", "window_start", "computed_at"):
            if "segment" in rec:  # a segment's figures: /api/segments has them
                continue
            hist = self._history(partition, rec["model"], rec["model_version"])
            hist.task = rec.get("task") or hist.task
            if rec["window"] == ROLLING:
                hist.rolling = rec
                self._add_point(hist, rec)
            else:
                sized = hist.windows.setdefault(rec["window"], {})
                sized[int(rec["window_start"])] = rec
                for start in sorted(sized)[: max(0, len(sized) - self.max_points)]:
                    del sized[start]
                _add_maturity(hist, rec)

    def on_alerts(self, partition: int, records: Iterable[Record]) -> None:
        """Alert records: a rule started firing or resolved for a model version."""
        for rec in _readable(records, "alert", "status", "at"):
            self._history(partition, rec["model"], rec["model_version"])
            ident = (rec["alert"], rec["model"], rec["model_version"])
            if rec["status"] == "firing":
                self.firing[ident] = rec
            else:
                self.firing.pop(ident, None)
            self.alert_events.append(rec)
        del self.alert_events[: max(0, len(self.alert_events) - MAX_ALERT_EVENTS)]

    def on_join_stats(self, partition: int, record: bytes) -> None:
        self.join = (partition, orjson.loads(record))

    def tick(self, now_ms: int, owned: Iterable[int]) -> None:
        """Forget what is older than the span, and what another instance now owns."""
        self.owned = tuple(sorted(owned))
        # Seeded figures wait for their owner's first live record while nothing is owned.
        keep = {*self.owned, *(() if self.owned else (SEEDED,))}
        gone = [k for k, h in self.models.items() if h.partition not in keep]
        for key in gone:
            del self.models[key]
        self.firing = {k: v for k, v in self.firing.items() if (k[1], k[2]) in self.models}
        if self.join is not None and self.join[0] not in keep:
            self.join = None
        oldest = now_ms - self.span_ms
        self.alert_events = [a for a in self.alert_events if a["at"] >= oldest
                             and (a["model"], a["model_version"]) in self.models]
        for hist in self.models.values():
            hist.points = [p for p in hist.points if p["at"] >= oldest]
            for sized in hist.windows.values():
                for start in [s for s, r in sized.items() if r["window_end"] < oldest]:
                    del sized[start]
            for sized in hist.maturity.values():
                week = now_ms - MATURITY_SPAN_MS
                for start in [s for s, r in sized.items() if r["window_end"] < week]:
                    del sized[start]

    # -- rendering ----------------------------------------------------------------------
    def status(self, now_ms: int) -> dict[str, Any]:
        """The ``/api/status`` document (schemas/status.schema.json)."""
        return {
            "generated_at": now_ms,
            "instance": self.instance,
            "partitions": {
                "owned": list(self.owned),
                "total": self.partitions,
                "complete": len(self.owned) == self.partitions,
            },
            "history": {"span_s": self.span_ms / 1000, "max_points": self.max_points},
            "windows": list(self.windows),
            "chart_metrics": list(CHART_METRICS),
            "estimated": list(ESTIMATED),
            "thresholds": [_threshold(r) for r in self.rules if r.metric in CHART_METRICS],
            "models": [self._model(k, h, now_ms) for k, h in sorted(self.models.items())],
            "firing": [self.firing[k] for k in sorted(self.firing, key=_by_model)],
            "join": None if self.join is None else self.join[1],
        }

    def _model(self, key: tuple[str, str], hist: History, now_ms: int) -> dict[str, Any]:
        model, version = key
        closed = {size: [r for _, r in sorted(sized.items()) if r["window_end"] <= now_ms]
                  for size, sized in sorted(hist.windows.items())}
        return {
            "model": model,
            "model_version": version,
            "task": hist.task,
            "rolling": hist.rolling,
            "rolling_history": hist.points,
            "windows": closed,
            "maturity": {size: [r for _, r in sorted(sized.items()) if r["window_end"] <= now_ms]
                         for size, sized in sorted(hist.maturity.items())},
            "alert_events": [
                a for a in self.alert_events if (a["model"], a["model_version"]) == key
            ],
        }

    # -- helpers ------------------------------------------------------------------------
    def _history(self, partition: int, model: str, version: str) -> History:
        hist = self.models.get((model, version))
        if hist is not None and hist.partition == SEEDED:
            hist.partition = partition  # the live owner takes over the seeded history
        elif hist is None or hist.partition != partition:
            # A version moved here from another partition's owner: start afresh.
            hist = self.models[(model, version)] = History(partition, step_ms=self.min_step_ms)
        return hist

    def _add_point(self, hist: History, rec: dict[str, Any]) -> None:
        point = {"at": int(rec["computed_at"]), **{f: rec.get(f) for f in POINT_FIELDS}}
        pts = hist.points
        if pts and point["at"] < pts[-1]["at"]:
            return  # an older record (a restart's replay): the history moves forward only
        if len(pts) >= 2 and pts[-1]["at"] - pts[-2]["at"] < hist.step_ms:
            pts[-1] = point
        else:
            pts.append(point)
        while len(pts) > self.max_points:
            hist.step_ms *= 2
            hist.points = pts = thin(pts, hist.step_ms)


def _add_maturity(hist: History, rec: dict[str, Any]) -> None:
    """The window's maturity curve, kept a week (longer than the figures' span)."""
    sized = hist.maturity.setdefault(rec["window"], {})
    sized[int(rec["window_start"])] = {
        k: rec.get(k) for k in ("window_start", "window_end", "computed_at", "predicted",
                                "coverage")} | {"maturity": rec.get("maturity") or []}
    for start in sorted(sized)[: max(0, len(sized) - MAX_MATURITY_WINDOWS)]:
        del sized[start]


def _readable(records: Iterable[Record], *required: str) -> Iterator[dict[str, Any]]:
    """The records that have the fields the page needs; others (a worker's model_refused
    record on a shared alerts topic, anything unreadable) are not the page's business."""
    for _key, value in records:
        try:
            rec = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and all(k in rec for k in ("model", "model_version", *required)):
            yield rec


def thin(points: list[dict[str, Any]], step_ms: int) -> list[dict[str, Any]]:
    """Points at least ``step_ms`` apart, oldest first, always keeping the newest."""
    kept: list[dict[str, Any]] = []
    for p in points[:-1]:
        if not kept or p["at"] - kept[-1]["at"] >= step_ms:
            kept.append(p)
    if kept and points and points[-1]["at"] - kept[-1]["at"] < step_ms:
        kept.pop()
    return [*kept, *points[-1:]]


def _by_model(ident: tuple[str, str, str]) -> tuple[str, str, str]:
    alert, model, version = ident
    return model, version, alert


def _threshold(rule: AlertRule) -> dict[str, Any]:
    return {"alert": rule.name, "metric": rule.metric, "op": rule.op,
            "threshold": rule.threshold, "window": rule.window,
            "min_count": rule.min_count, "min_coverage": rule.min_coverage}
