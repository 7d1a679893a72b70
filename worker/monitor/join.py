"""The label join, keyed by event id, as pure reducers over a small pending state.

One ``Pending`` value per id holds either predictions waiting for their label or
a label waiting for its prediction (labels can arrive first). Once a pair joins,
the entry is kept as a *joined marker* (the label plus which model versions
already joined) until the horizon, so that a retried prediction or a repeated
label is recognised as a duplicate instead of being counted a second time.
Predictions of several model versions for the same id (shadow scoring) each
join the one label; a second prediction of the same model version is a duplicate.

The horizon is measured from when the entry was stored: the entry is alive
while ``now_ms < stored_at + horizon_ms`` and due for expiry from
``stored_at + horizon_ms`` on. A join stores the marker anew, and a marker lives
``dedup_ms`` (by default a whole horizon) from the join, so duplicates are
recognised for that long after the join, not only until the horizon of the first
message. ``on_prediction`` and ``on_label`` expire a due
entry themselves before using it, so results do not depend on how often the
caller sweeps with ``expire``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from worker.monitor.views import LabelView, Outcome, PredictionView

DEFAULT_HORIZON_MS: Final = 24 * 3600 * 1000


class StepKind(StrEnum):
    STORED_PREDICTION = "stored_prediction"
    STORED_LABEL = "stored_label"
    JOINED = "joined"
    DUPLICATE_PREDICTION = "duplicate_prediction"
    DUPLICATE_LABEL = "duplicate_label"


@dataclass(frozen=True, slots=True)
class JoinConfig:
    horizon_ms: int = DEFAULT_HORIZON_MS
    # Without markers a joined entry is deleted at once: less state, but a retried
    # prediction after its label would be counted again and later expire unlabeled.
    keep_joined: bool = True
    #: How long a joined marker lives (None: a horizon); after it, a retried
    #: prediction or a second label of the id is taken as a new one.
    dedup_ms: int | None = None

    def lifetime(self, pending: Pending) -> int:
        """How long ``pending`` lives from its ``stored_at``."""
        if pending.joined and self.dedup_ms is not None:
            return self.dedup_ms
        return self.horizon_ms


DEFAULT_JOIN: Final = JoinConfig()


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
           dedup_ms: int | None = None) -> bool:  # fmt: skip
    life = dedup_ms if pending.joined and dedup_ms is not None else horizon_ms
    return now_ms >= pending.stored_at + life


def expire(
    pending: Pending, now_ms: int, horizon_ms: int = DEFAULT_HORIZON_MS,
    dedup_ms: int | None = None,
) -> Expiry | None:  # fmt: skip
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
                        expired=expired)  # fmt: skip
    outcomes = tuple(_outcome(p, label, now_ms) for p in pending.predictions)
    joined = tuple(p.model_key for p in pending.predictions)
    state = _marker(label, (*pending.joined, *joined), now_ms, config)
    return JoinStep(StepKind.JOINED, state, outcomes, expired=expired)


def _join_inline(
    pending: Pending | None, pred: PredictionView, label: LabelView, config: JoinConfig,
    expired: Expiry | None,
) -> JoinStep:  # fmt: skip
    # The event brought its own truth (replays, backtests): it joins at once and,
    # as the id's first label, also completes other model versions' waiting predictions.
    now_ms = label.received_at
    base = pending or Pending(stored_at=now_ms)
    outcomes = (*(_outcome(p, label, now_ms) for p in base.predictions),
                Outcome(pred, label.value, now_ms, now_ms, inline=True))  # fmt: skip
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


DELAY_BUCKETS_S: Final = (1, 5, 30, 60, 300, 900, 3600, 21600, 86400, float("inf"))
_DELAY_BOUNDS_MS: Final = tuple(b * 1000 for b in DELAY_BUCKETS_S[:-1])
_COUNTERS: Final = (
    "predictions", "duplicate_predictions", "labels", "duplicate_labels", "joined",
    "joined_inline", "expired_predictions", "unmatched_labels",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JoinStats:
    """Mergeable counters of the join plus the label-delay histogram.

    ``delay_counts[i]`` counts joins whose delay d (seconds, label time minus the
    prediction's event time, negative clock skew counted as 0) satisfies
    ``DELAY_BUCKETS_S[i-1] < d <= DELAY_BUCKETS_S[i]``; inline labels have no delay.
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    delay_counts: tuple[int, ...] = (0,) * len(DELAY_BUCKETS_S)

    def add_step(self, step: JoinStep) -> JoinStats:
        counts = dict(self.counts)
        delays = self.delay_counts

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
        stats = JoinStats(counts, delays)
        return stats if step.expired is None else stats.add_expiry(step.expired)

    def add_expiry(self, expiry: Expiry) -> JoinStats:
        counts = dict(self.counts)
        if expiry.expired_predictions:
            counts["expired_predictions"] = (counts.get("expired_predictions", 0)
                                             + len(expiry.expired_predictions))  # fmt: skip
        if expiry.unmatched_label is not None:
            counts["unmatched_labels"] = counts.get("unmatched_labels", 0) + 1
        return JoinStats(counts, self.delay_counts)

    def merge(self, other: JoinStats) -> JoinStats:
        counts = {k: self.counts.get(k, 0) + other.counts.get(k, 0) for k in _COUNTERS}
        delays = tuple(a + b for a, b in zip(self.delay_counts, other.delay_counts, strict=True))
        return JoinStats({k: v for k, v in counts.items() if v}, delays)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": {k: self.counts.get(k, 0) for k in _COUNTERS},
                "delay_counts": list(self.delay_counts)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JoinStats:
        counts = {k: int(data["counts"].get(k, 0)) for k in _COUNTERS}
        delays = tuple(int(c) for c in data["delay_counts"])
        if len(delays) != len(DELAY_BUCKETS_S):
            raise ValueError(f"delay_counts must have {len(DELAY_BUCKETS_S)} entries")
        return cls({k: v for k, v in counts.items() if v}, delays)


def delay_bucket(delay_ms: int) -> int:
    """Index of the delay bucket; the last bucket is unbounded."""
    return bisect_left(_DELAY_BOUNDS_MS, delay_ms)
