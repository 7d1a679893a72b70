"""The monitor's feature side: statistics records in, per-feature windows, alert records
and the status page's history out. Pure: the app reads the topic and passes time in.

The statistics topic is keyed by model, so the instance that owns a partition owns
every record of its models. On assignment the app restores a partition by reading it
from the retention's start up to the group's committed offset (``restore``), then the
live loop continues from that offset (``apply``): each committed record is added
exactly once, after a kill -9 too.

Alert states (firing since, resolved at: the cooldown) persist as the accuracy alerts'
do: every state that changes is a changelog record (``take_changes``: key the state's
key, value the model and the state), which the app writes to a compacted topic in the
transaction that sends the alert and commits the statistics offsets; on assignment it
reads the partition's records back (``restore_state``). A rule firing before a restart
is still firing after it, without a second record, and a cooldown keeps running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from worker.core.feature_stats import FeatureStats, StatsError
from worker.monitor.alerts import AlertState
from worker.monitor.feature_alerts import FeatureAlert, FeatureRule, evaluate_window
from worker.monitor.feature_windows import FeatureWindow, FeatureWindows
from worker.monitor.records import alert_record
from worker.monitor.windows import ROLLING

#: Points of rolling PSI kept per feature for the status page (one per tick).
HISTORY_POINTS: Final = 120
#: Features per model version on the status page (the most drifted).
TOP_FEATURES: Final = 10


@dataclass
class FeatureStage:
    windows: FeatureWindows
    rules: tuple[FeatureRule, ...]
    #: Windows computed each tick ("rolling" first, then the monitor's sizes).
    specs: tuple[str, ...] = (ROLLING,)
    states: dict[str, AlertState] = field(default_factory=dict)
    invalid: int = 0
    latest: list[FeatureWindow] = field(default_factory=list)
    history: dict[tuple[str, str, str], deque[tuple[int, float | None]]] = field(
        default_factory=dict)
    #: Model -> the statistics partition its records came from (revoke drops them).
    partition_of: dict[str, int] = field(default_factory=dict)
    #: State key -> its model (revoke drops the states of the models it takes away).
    state_model: dict[str, str] = field(default_factory=dict)
    #: States changed since the last ``take_changes``.
    changed: set[str] = field(default_factory=set)

    def apply(self, records: Iterable[tuple[int, bytes | None]]) -> None:
        """(partition, value) of statistics records, in order."""
        for partition, value in records:
            try:
                stats = FeatureStats.decode(value or b"")
            except StatsError:
                self.invalid += 1
                continue
            self.partition_of[stats.model] = partition
            self.windows.add(stats)

    def restore_state(self, partition: int, key: bytes, value: bytes | None) -> None:
        """A changelog record of an alert state, read back on assigning ``partition``:
        kept when its model's statistics are in that partition (or not yet seen)."""
        if value is None:
            return
        data = orjson.loads(value)
        model = str(data["model"])
        if self.partition_of.get(model, partition) != partition:
            return
        name = key.decode()
        self.states[name] = AlertState.from_dict(data["state"])
        self.state_model[name] = model

    def take_changes(self) -> list[tuple[str, bytes, bytes]]:
        """(model, key, value) of each alert state changed since the last call."""
        out = [(self.state_model[k], k.encode(), orjson.dumps(
                    {"model": self.state_model[k], "state": self.states[k].to_dict()}))
               for k in sorted(self.changed)]
        self.changed.clear()
        return out

    def revoke(self, partition: int) -> None:
        gone = {m for m, p in self.partition_of.items() if p == partition}
        for key in [k for k in self.windows.versions if k[0] in gone]:
            del self.windows.versions[key]
        for name in [k for k, m in self.state_model.items() if m in gone]:
            del self.states[name], self.state_model[name]
            self.changed.discard(name)
        self.latest = [w for w in self.latest if w.model not in gone]
        for model in gone:
            del self.partition_of[model]

    def tick(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        """Figures of every window as of ``now_ms``; (key, value) of the alert records."""
        self.windows.expire(now_ms)
        self.latest = self.windows.windows(self.specs, now_ms)
        out: list[tuple[bytes, bytes]] = []
        for window in self.latest:
            states, alerts = evaluate_window(self.states, self.rules, window, now_ms)
            for key, state in states.items():
                self.state_model.setdefault(key, window.model)
                if self.states.get(key, AlertState()) != state:
                    self.changed.add(key)
            self.states = states
            out += [_encoded(a) for a in alerts]
            if window.window == ROLLING:
                self._remember(window, now_ms)
        return out

    def _remember(self, window: FeatureWindow, now_ms: int) -> None:
        for f in window.features:
            key = (window.model, window.model_version, f.name)
            points = self.history.setdefault(key, deque(maxlen=HISTORY_POINTS))
            points.append((now_ms, f.psi))

    def status(self) -> dict[str, Any]:
        """The status page's features panel: per model version and window the most
        drifted features, the rolling PSI history, and why drift is off where it is."""
        windows = []
        for w in self.latest:
            data = w.to_dict()
            data["features"] = data["features"][:TOP_FEATURES]  # type: ignore[index]
            if w.window == ROLLING:
                for f in data["features"]:  # type: ignore[attr-defined]
                    key = (w.model, w.model_version, f["feature"])
                    f["psi_history"] = [list(p) for p in self.history.get(key, ())]
            windows.append(data)
        off = [{"model": m, "model_version": v, "reason": why}
               for (m, v), why in sorted(self.windows.off.items())]
        return {"windows": windows, "drift_off": off, "invalid": self.invalid,
                "refused": dict(self.windows.refused)}

    def segments_status(self) -> dict[str, Any]:
        """``/api/features/segments``: per model version and window, each segment row (the
        top K values of each field and ``__other__``) with its most drifted features."""
        return {"windows": [
            {"model": w.model, "model_version": w.model_version, "window": w.window,
             "window_start": w.start_ms, "window_end": w.end_ms,
             "rows": [r.to_dict(TOP_FEATURES) for r in w.segments]}
            for w in self.latest if w.segments]}


def _encoded(alert: FeatureAlert) -> tuple[bytes, bytes]:
    record: Mapping[str, Any] = {**alert_record(alert.record), "feature": alert.feature}
    return alert.record.key().encode(), orjson.dumps(record)
