"""The figures of ``scoring-worker demo --drift``, from what the product published: the
monitor's window records and alerts, the predictions, the decision record. Pure."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.kafka_io.ranges import RangeRecord


@dataclass
class LoopReport:
    """What the loop demo measured; ``tests/integration/test_retrain_loop.py`` checks it."""

    events: int = 0
    malformed: int = 0
    predictions: int = 0
    lost: int = 0
    duplicates: int = 0
    #: Per input partition, the model versions of its predictions in offset order, runs
    #: collapsed: ["1", "2"] is one switch, at one point of the partition.
    versions_by_partition: dict[int, list[str]] = field(default_factory=dict)
    drift_started_ms: int | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    retrain_command: list[str] = field(default_factory=list)
    retrain_output: str = ""
    retrain_exit: int | None = None
    first_v2_ms: int | None = None
    #: (version, window start, labeled, recall, ROC AUC) of the monitor's tumbling windows.
    windows: list[tuple[str, int, int, float | None, float | None]] = field(default_factory=list)
    recall_before: float | None = None
    recall_after_drift: float | None = None
    recall_after_promotion: float | None = None
    rolling: dict[str, dict[str, Any]] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)


def latest_by_key(records: Iterable[RangeRecord]) -> dict[bytes, dict[str, Any]]:
    """A compacted topic's view: the last value of each key (read in offset order)."""
    out: dict[bytes, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is not None and r.value:
            out[r.key] = orjson.loads(r.value)
    return out


def check_predictions(report: LoopReport, records: Sequence[RangeRecord], expected: set[str]
                      ) -> None:
    """Lost and duplicated events, and each partition's run of versions."""
    ids: list[str] = []
    by_part: dict[int, list[tuple[int, str]]] = {}
    v2: list[int] = []
    for r in records:
        rec = orjson.loads(r.value or b"{}")
        ids.append(rec["id"])
        by_part.setdefault(r.partition, []).append((r.offset, rec["model_version"]))
        if rec["model_version"] != "1":
            v2.append(r.timestamp_ms)
    report.predictions = len(ids)
    report.lost = len(expected - set(ids))
    report.duplicates = len(ids) - len(set(ids))
    report.versions_by_partition = {
        p: [v for v, _ in itertools.groupby(v for _, v in sorted(rows))]
        for p, rows in sorted(by_part.items())
    }
    report.first_v2_ms = min(v2) if v2 else None


def read_windows(report: LoopReport, metrics: Mapping[bytes, dict[str, Any]], window: str) -> None:
    """Window rows, the three phases' recall, and each version's rolling view."""
    rows = [m for m in metrics.values() if m.get("window") == window]
    rows.sort(key=lambda m: (m["window_start"], m["model_version"]))
    report.windows = [(m["model_version"], m["window_start"], m["count"], m["recall"],
                       m["roc_auc"]) for m in rows if m["count"]]
    drift = report.drift_started_ms or 0
    # The window the drift falls in holds both kinds of traffic: it counts for neither.
    v1 = [m for m in rows if m["model_version"] == "1"]
    report.recall_before = merged_recall(m for m in v1 if m["window_end"] <= drift)
    report.recall_after_drift = merged_recall(m for m in v1 if m["window_start"] >= drift)
    report.recall_after_promotion = merged_recall(m for m in rows if m["model_version"] != "1")
    report.rolling = {m["model_version"]: m for m in metrics.values()
                      if m.get("window") == "rolling"}


def merged_recall(windows: Iterable[Mapping[str, Any]]) -> float | None:
    """Recall over several windows: true positives (recall x positives) over positives."""
    hits = positives = 0
    for w in windows:
        if w.get("positives") and w.get("recall") is not None:
            hits += round(w["recall"] * w["positives"])
            positives += w["positives"]
    return hits / positives if positives else None


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def story(r: LoopReport) -> str:
    """The run as the docs tell it (docs/getting-started/drift-demo.md)."""
    out = ["", "== scoring-worker demo --drift: detect, retrain, compare, promote, verify =="]
    out += [f"[{t:6.1f}s] {what}" for t, what in r.timeline]
    out += ["", "retrain output:", *("  " + ln for ln in r.retrain_output.splitlines())]
    t0 = r.windows[0][1] if r.windows else 0
    out += ["", "monitor windows (event time from the first window):",
            "   start  version  labeled  recall  ROC AUC"]
    size = r.windows[1][1] - t0 if len(r.windows) > 1 else 0
    drift = r.drift_started_ms or 0
    out += [f"  {(s - t0) / 1000:5.0f}s  {v:>7}  {n:7,}  {_f(rec):>6}  {_f(auc):>7}"
            + ("  <- the drift begins" if s < drift < s + size else "")
            for v, s, n, rec, auc in r.windows]
    roll = {v: (m.get("count"), _f(m.get("recall")), _f(m.get("roc_auc")))
            for v, m in sorted(r.rolling.items())}
    out += ["", f"recall before the drift (v1):      {_f(r.recall_before)}",
            f"recall after the drift (v1):       {_f(r.recall_after_drift)}",
            f"recall after the promotion (v2):   {_f(r.recall_after_promotion)}",
            "rolling view (labeled, recall, ROC AUC): "
            + "; ".join(f"v{v} {c} {rc} {auc}" for v, (c, rc, auc) in roll.items()),
            f"events {r.events:,} ({r.malformed:,} malformed), predictions {r.predictions:,}, "
            f"lost {r.lost}, duplicates {r.duplicates}",
            "versions per partition: " + "; ".join(
                f"p{p} {' -> '.join(vs)}" for p, vs in r.versions_by_partition.items()),
            f"exit codes: {r.exits}"]
    return "\n".join(out)
