"""The label join one message at a time, with typed values: the tests' oracle.

The product joins a block at a time over compact entries (worker/monitor/join.py, whose
docstring states the rules) and turns a batch into per-window deltas with numpy
(worker/monitor/deltas.py). This module states the same rules one message at a time
(``on_prediction``, ``on_label``, ``expire``), counts them (``add_step``,
``add_expiry``) and places each event's terms into its windows (``window_deltas``,
``step_deltas``); test_bulk.py holds the two paths to bit-identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from worker.monitor.aggregate import WindowAgg, fold_terms
from worker.monitor.join import (
    DEFAULT_HORIZON_MS,
    DELAY_BUCKETS_S,
    JoinConfig,
    JoinStats,
    delay_bucket,
)
from worker.monitor.terms import (
    EXPIRED,
    INLINE_LABEL_MS,
    Terms,
    maturity_terms,
    outcome_terms,
    prediction_terms,
)
from worker.monitor.views import LabelView, ModelSpec, Outcome, PredictionView
from worker.monitor.windows import WindowKey, parse_window

__all__ = [
    "DEFAULT_HORIZON_MS", "DELAY_BUCKETS_S", "Expiry", "JoinConfig", "JoinStats", "JoinStep",
    "Pending", "StepKind", "add_expiry", "add_step", "delay_bucket", "expire", "is_due",
    "on_label", "on_prediction", "step_deltas", "window_deltas",
]

DEFAULT_JOIN: Final = JoinConfig()


class StepKind(StrEnum):
    STORED_PREDICTION = "stored_prediction"
    STORED_LABEL = "stored_label"
    JOINED = "joined"
    DUPLICATE_PREDICTION = "duplicate_prediction"
    DUPLICATE_LABEL = "duplicate_label"


@dataclass(frozen=True, slots=True)
class Pending:
    """Join state of one id; invariant: when ``label`` is set, ``predictions`` is empty."""

    stored_at: int
    predictions: tuple[PredictionView, ...] = ()
    label: LabelView | None = None
    joined: tuple[tuple[str, str], ...] = ()

    def has_model(self, key: tuple[str, str]) -> bool:
        return key in self.joined or any(p.model_key == key for p in self.predictions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored_at": self.stored_at,
            "predictions": [p.to_dict() for p in self.predictions],
            "label": None if self.label is None else self.label.to_dict(),
            "joined": [list(k) for k in self.joined],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pending:
        label = data.get("label")
        return cls(
            stored_at=int(data["stored_at"]),
            predictions=tuple(PredictionView.from_dict(p) for p in data.get("predictions", ())),
            label=None if label is None else LabelView.from_dict(label),
            joined=tuple((str(m), str(v)) for m, v in data.get("joined", ())),
        )


@dataclass(frozen=True, slots=True)
class Expiry:
    """What an entry that reached the horizon leaves behind (both empty: a joined marker)."""

    expired_predictions: tuple[PredictionView, ...] = ()
    unmatched_label: LabelView | None = None


@dataclass(frozen=True, slots=True)
class JoinStep:
    """Result of one message: the id's new state (None: delete it) and what happened.

    ``new_prediction`` is set the first time a prediction is seen, so that the
    caller counts it once (predicted, PSI) however often it is redelivered.
    """

    kind: StepKind
    pending: Pending | None
    outcomes: tuple[Outcome, ...] = ()
    new_prediction: PredictionView | None = None
    expired: Expiry | None = None

    @property
    def outcome(self) -> Outcome | None:
        """The joined outcome when exactly one pair completed (the usual case)."""
        return self.outcomes[0] if len(self.outcomes) == 1 else None


def is_due(pending: Pending, now_ms: int, horizon_ms: int = DEFAULT_HORIZON_MS,
           dedup_ms: int | None = None) -> bool:
    life = dedup_ms if pending.joined and dedup_ms is not None else horizon_ms
    return now_ms >= pending.stored_at + life


def expire(
    pending: Pending, now_ms: int, horizon_ms: int = DEFAULT_HORIZON_MS,
    dedup_ms: int | None = None,
) -> Expiry | None:
    """None while the entry is alive; once due, what it leaves (the caller deletes it)."""
    if not is_due(pending, now_ms, horizon_ms, dedup_ms):
        return None
    unmatched = pending.label if pending.label is not None and not pending.joined else None
    return Expiry(expired_predictions=pending.predictions, unmatched_label=unmatched)


def on_prediction(
    pending: Pending | None, pred: PredictionView, now_ms: int, config: JoinConfig = DEFAULT_JOIN
) -> JoinStep:
    """Fold one prediction message into the id's state."""
    pending, expired = _expire_first(pending, now_ms, config)
    if pending is not None and pending.has_model(pred.model_key):
        return JoinStep(StepKind.DUPLICATE_PREDICTION, pending, expired=expired)
    if pending is not None and pending.label is not None:
        outcome = _outcome(pred, pending.label, now_ms)
        state = _marker(pending.label, (*pending.joined, pred.model_key), now_ms, config)
        return JoinStep(StepKind.JOINED, state, (outcome,), pred, expired)
    if pred.true_label is not None:
        inline = LabelView(pred.id, pred.true_label, received_at=now_ms)
        return _join_inline(pending, pred, inline, config, expired)
    if pending is None:
        state = Pending(stored_at=now_ms, predictions=(pred,))
    else:
        state = Pending(pending.stored_at, (*pending.predictions, pred), None, pending.joined)
    return JoinStep(StepKind.STORED_PREDICTION, state, new_prediction=pred, expired=expired)


def on_label(
    pending: Pending | None, label: LabelView, now_ms: int, config: JoinConfig = DEFAULT_JOIN
) -> JoinStep:
    """Fold one label message into the id's state; the first label of an id wins."""
    pending, expired = _expire_first(pending, now_ms, config)
    if pending is not None and pending.label is not None:
        return JoinStep(StepKind.DUPLICATE_LABEL, pending, expired=expired)
    if pending is None:
        return JoinStep(StepKind.STORED_LABEL, Pending(stored_at=now_ms, label=label),
                        expired=expired)
    outcomes = tuple(_outcome(p, label, now_ms) for p in pending.predictions)
    joined = tuple(p.model_key for p in pending.predictions)
    state = _marker(label, (*pending.joined, *joined), now_ms, config)
    return JoinStep(StepKind.JOINED, state, outcomes, expired=expired)


def _join_inline(
    pending: Pending | None, pred: PredictionView, label: LabelView, config: JoinConfig,
    expired: Expiry | None,
) -> JoinStep:
    # The event brought its own truth (replays, backtests): it joins at once and,
    # as the id's first label, also completes other model versions' waiting predictions.
    now_ms = label.received_at
    base = pending or Pending(stored_at=now_ms)
    outcomes = (*(_outcome(p, label, now_ms) for p in base.predictions),
                Outcome(pred, label.value, now_ms, now_ms, inline=True))
    joined = tuple(o.prediction.model_key for o in outcomes)
    state = _marker(label, (*base.joined, *joined), now_ms, config)
    return JoinStep(StepKind.JOINED, state, outcomes, pred, expired)


def _expire_first(
    pending: Pending | None, now_ms: int, config: JoinConfig
) -> tuple[Pending | None, Expiry | None]:
    if pending is None:
        return None, None
    expiry = expire(pending, now_ms, config.horizon_ms, config.dedup_ms)
    return (pending, None) if expiry is None else (None, expiry)


def _marker(
    label: LabelView, joined: tuple[tuple[str, str], ...], now_ms: int, config: JoinConfig
) -> Pending | None:
    """State after a join: the label and who joined it, stored anew (None without markers)."""
    return Pending(now_ms, (), label, joined) if config.keep_joined else None


def _outcome(pred: PredictionView, label: LabelView, now_ms: int) -> Outcome:
    return Outcome(pred, label.value, label_time=label.time, joined_at=now_ms)


def add_step(stats: JoinStats, step: JoinStep) -> JoinStats:
    """``stats`` with one message's step counted (and the expiry it carried)."""
    counts = dict(stats.counts)
    delays = stats.delay_counts

    def bump(name: str, n: int = 1) -> None:
        counts[name] = counts.get(name, 0) + n

    if step.new_prediction is not None:
        bump("predictions")
    if step.kind is StepKind.DUPLICATE_PREDICTION:
        bump("duplicate_predictions")
    elif step.kind is StepKind.DUPLICATE_LABEL:
        bump("duplicate_labels")
    elif step.kind is StepKind.STORED_LABEL or (
        step.kind is StepKind.JOINED and step.new_prediction is None
    ):
        bump("labels")
    for outcome in step.outcomes:
        bump("joined_inline" if outcome.inline else "joined")
        if outcome.delay_ms is not None:
            i = delay_bucket(outcome.delay_ms)
            delays = (*delays[:i], delays[i] + 1, *delays[i + 1 :])
    counted = JoinStats(counts, delays)
    return counted if step.expired is None else add_expiry(counted, step.expired)


def add_expiry(stats: JoinStats, expiry: Expiry) -> JoinStats:
    counts = dict(stats.counts)
    if expiry.expired_predictions:
        counts["expired_predictions"] = (counts.get("expired_predictions", 0)
                                         + len(expiry.expired_predictions))
    if expiry.unmatched_label is not None:
        counts["unmatched_labels"] = counts.get("unmatched_labels", 0) + 1
    return JoinStats(counts, stats.delay_counts)


def window_deltas(
    windows: Sequence[str],
    spec_for: Callable[[PredictionView], ModelSpec],
    predictions: Iterable[PredictionView] = (),
    outcomes: Iterable[Outcome] = (),
    expired: Iterable[PredictionView] = (),
) -> dict[WindowKey, WindowAgg]:
    """One delta aggregate per window touched by a batch: first sightings of
    predictions, joined outcomes and expired predictions, each placed by event time."""
    sizes = [(w, parse_window(w)) for w in windows]
    placed: dict[WindowKey, tuple[str, list[Terms]]] = {}

    def place(pred: PredictionView, task: str, terms: Terms, label_ms: int | None = None
              ) -> None:
        t = pred.event_time
        for window, size in sizes:
            key = WindowKey(pred.model, pred.model_version, window, t - t % size)
            added = placed.setdefault(key, (task, []))[1]
            added.append(terms)
            if label_ms is not None:  # an outcome: its label's age after this window's end
                added.append(maturity_terms(terms, label_ms, key.end_ms))

    for pred in predictions:
        spec = spec_for(pred)
        place(pred, spec.task, prediction_terms(pred, spec))
    for outcome in outcomes:
        spec = spec_for(outcome.prediction)
        label_ms = INLINE_LABEL_MS if outcome.inline else outcome.label_time
        place(outcome.prediction, spec.task, outcome_terms(outcome, spec), label_ms)
    for pred in expired:
        place(pred, spec_for(pred).task, EXPIRED)
    return {key: fold_terms(WindowAgg(), task, terms) for key, (task, terms) in placed.items()}


def step_deltas(
    steps: Iterable[JoinStep],
    windows: Sequence[str],
    spec_for: Callable[[PredictionView], ModelSpec],
) -> dict[WindowKey, WindowAgg]:
    """``window_deltas`` of a batch of join steps (including expiries they carried)."""
    predictions: list[PredictionView] = []
    outcomes: list[Outcome] = []
    expired: list[PredictionView] = []
    for step in steps:
        if step.new_prediction is not None:
            predictions.append(step.new_prediction)
        outcomes.extend(step.outcomes)
        if step.expired is not None:
            expired.extend(step.expired.expired_predictions)
    return window_deltas(windows, spec_for, predictions, outcomes, expired)
