"""The monitor's two stages as state machines over batches (no Kafka, no clock).

Stage one owns partitions of the join topic (predictions and labels keyed by
id): it joins, expires, and keeps one partial WindowAgg per window for its
partition. Stage two owns partitions of the partials topic (keyed by model and
version): it merges the latest partial of every source partition into global
windows, computes the figures, the rolling view and the alerts.

Every change is returned as changelog entries (key -> JSON or None for a
delete) so that the caller can write them in the same transaction as the
batch's offsets; ``restore`` reads them back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.monitor.aggregate import WindowAgg, step_deltas, window_deltas
from worker.monitor.join import JoinConfig, JoinStats, JoinStep, Pending, expire
from worker.monitor.join import on_label as join_label
from worker.monitor.join import on_prediction as join_prediction
from worker.monitor.views import (
    DEFAULT_TRUE_LABEL_FIELD,
    LabelView,
    ModelSpec,
    MonitorInputError,
    PredictionView,
)
from worker.monitor.windows import WindowKey

Changelog = dict[str, bytes | None]
SpecFor = Callable[[PredictionView], ModelSpec]
STATS_KEY = "__stats__"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


@dataclass
class JoinPartition:
    """Stage one for one partition of the join topic."""

    partition: int
    windows: Sequence[str]
    spec_for: SpecFor
    config: JoinConfig = field(default_factory=JoinConfig)
    true_label_field: str = DEFAULT_TRUE_LABEL_FIELD
    #: Windows this far behind the newest event time are dropped (0: keep all).
    retain_ms: int = 0
    pending: dict[str, Pending] = field(default_factory=dict)
    partials: dict[WindowKey, WindowAgg] = field(default_factory=dict)
    stats: JoinStats = field(default_factory=JoinStats)
    invalid: int = 0
    #: (stored_at, id) in arrival order, so that expiry does not scan every entry.
    _due: deque[tuple[int, str]] = field(default_factory=deque)

    def restore(self, key: str, value: bytes | None) -> None:
        kind, _, rest = key.partition("|")
        if kind == "j":
            if value is None:
                self.pending.pop(rest, None)
            else:
                entry = Pending.from_dict(orjson.loads(value))
                self.pending[rest] = entry
                self._due.append((entry.stored_at, rest))
        elif kind == "w" and value is not None:
            self.partials[WindowKey.parse_key(rest)] = WindowAgg.from_dict(orjson.loads(value))
        elif kind == "s" and value is not None:
            self.stats = JoinStats.from_dict(orjson.loads(value))

    def apply(
        self, items: Iterable[tuple[str, dict[str, Any], int]]
    ) -> tuple[Changelog, set[WindowKey]]:
        """Fold (kind 'p' or 'l', message, time ms) items; the time is the join's 'now'."""
        steps: list[JoinStep] = []
        touched: dict[str, Pending | None] = {}
        for kind, msg, now_ms in items:
            try:
                step = self._one(kind, msg, now_ms)
            except (MonitorInputError, KeyError, TypeError, ValueError):
                self.invalid += 1
                continue
            steps.append(step)
            ident = str(msg["id"])
            touched[ident] = step.pending
            self._store(ident, step.pending)
        return self._finish(steps, touched, [])

    def _one(self, kind: str, msg: dict[str, Any], now_ms: int) -> JoinStep:
        ident = msg.get("id")
        if not isinstance(ident, str):
            raise MonitorInputError("'id' must be a string")
        if kind == "p":
            pred = PredictionView.from_message(msg, self.true_label_field)
            return join_prediction(self.pending.get(ident), pred, now_ms, self.config)
        label = LabelView.from_message(msg, now_ms)
        return join_label(self.pending.get(ident), label, now_ms, self.config)

    def _store(self, ident: str, entry: Pending | None) -> None:
        if entry is None:
            self.pending.pop(ident, None)
            return
        previous = self.pending.get(ident)
        self.pending[ident] = entry
        if previous is None or previous.stored_at != entry.stored_at:
            self._due.append((entry.stored_at, ident))

    def sweep(self, now_ms: int) -> tuple[Changelog, set[WindowKey]]:
        """Expire the entries past the horizon: unlabeled predictions, unmatched labels."""
        expired_preds: list[PredictionView] = []
        touched: dict[str, Pending | None] = {}
        horizon = self.config.horizon_ms
        while self._due and self._due[0][0] + horizon <= now_ms:
            stored_at, ident = self._due.popleft()
            entry = self.pending.get(ident)
            if entry is None or entry.stored_at != stored_at:
                continue  # stale: deleted or stored anew since
            expiry = expire(entry, now_ms, horizon)
            if expiry is None:
                continue
            self.stats = self.stats.add_expiry(expiry)
            expired_preds.extend(expiry.expired_predictions)
            del self.pending[ident]
            touched[ident] = None
        changes, windows = self._finish([], touched, expired_preds)
        if self.retain_ms:
            for key in [k for k in self.partials if k.end_ms + self.retain_ms < now_ms]:
                del self.partials[key]
                changes[f"w|{key.kafka_key()}"] = None
        return changes, windows

    def _finish(self, steps: list[JoinStep], touched: Mapping[str, Pending | None],
                expired: list[PredictionView]) -> tuple[Changelog, set[WindowKey]]:  # fmt: skip
        changes: Changelog = {
            f"j|{i}": None if p is None else dumps(p.to_dict()) for i, p in touched.items()
        }
        deltas = step_deltas(steps, self.windows, self.spec_for)
        if expired:
            for key, agg in window_deltas(self.windows, self.spec_for, expired=expired).items():
                deltas[key] = deltas[key].merge(agg) if key in deltas else agg
        for step in steps:
            self.stats = self.stats.add_step(step)
            if step.expired is not None:
                self.stats = self.stats.add_expiry(step.expired)
        for key, delta in deltas.items():
            held = self.partials.get(key)
            self.partials[key] = delta if held is None else held.merge(delta)
            changes[f"w|{key.kafka_key()}"] = dumps(self.partials[key].to_dict())
        if steps or touched:
            changes["s"] = dumps(self.stats.to_dict())
        return changes, set(deltas)

    def partial_messages(self, keys: Iterable[WindowKey]) -> list[tuple[str, bytes]]:
        """(key, value) for the partials topic: this partition's whole partial per window."""
        out = []
        for key in keys:
            value = {"source": str(self.partition), "window": key.kafka_key(),
                     "agg": self.partials[key].to_dict()}  # fmt: skip
            out.append((model_key(key.model, key.model_version), dumps(value)))
        return out

    def stats_message(self) -> tuple[str, bytes]:
        return STATS_KEY, dumps({"source": str(self.partition), "stats": self.stats.to_dict(),
                                 "invalid": self.invalid})  # fmt: skip


def model_key(model: str, version: str) -> str:
    """Partials are keyed by model and version: all windows of one version (and so the
    rolling view) are merged by one stage-two owner."""
    return f"{model}|{version}"
