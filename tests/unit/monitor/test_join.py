"""The label join: order, duplicates, inline labels, expiry at the horizon, counts."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.unit.monitor.gen import T0, prediction
from tests.unit.monitor.reference_join import (
    DEFAULT_HORIZON_MS,
    DELAY_BUCKETS_S,
    Expiry,
    JoinConfig,
    JoinStats,
    Pending,
    StepKind,
    add_expiry,
    add_step,
    delay_bucket,
    expire,
    on_label,
    on_prediction,
)
from worker.monitor.views import LabelView, Outcome, PredictionView

H = DEFAULT_HORIZON_MS


def label(i: int, value: object = 1, at: int = T0, ts: int | None = None) -> LabelView:
    return LabelView(f"e{i}", value, received_at=at, ts=ts)  # type: ignore[arg-type]


def roundtrip(pending: Pending | None) -> Pending | None:
    if pending is None:
        return None
    return Pending.from_dict(orjson.loads(orjson.dumps(pending.to_dict())))


def test_prediction_then_label_joins_once() -> None:
    pred = prediction(1, 0.9, 1, t=T0, event_ts=T0 - 2000)
    first = on_prediction(None, pred, T0)
    assert first.kind is StepKind.STORED_PREDICTION and first.new_prediction == pred
    assert first.outcomes == () and first.pending == Pending(T0, (pred,))
    step = on_label(roundtrip(first.pending), label(1, 0, at=T0 + 60_000), T0 + 60_000)
    assert step.kind is StepKind.JOINED and step.new_prediction is None
    assert step.outcome == Outcome(pred, 0, label_time=T0 + 60_000, joined_at=T0 + 60_000)
    assert step.outcome.delay_ms == 62_000
    assert step.pending is not None and step.pending.joined == (("fraud", "1"),)
    assert step.pending.stored_at == T0 + 60_000  # the marker lives a horizon past the join


def test_label_before_prediction_joins_when_the_prediction_comes() -> None:
    stored = on_label(None, label(2, 1, at=T0, ts=T0 - 5), T0)
    assert stored.kind is StepKind.STORED_LABEL and stored.outcomes == ()
    pred = prediction(2, 0.2, 0, t=T0 + 10, event_ts=T0 - 1000)
    step = on_prediction(roundtrip(stored.pending), pred, T0 + 10)
    assert step.kind is StepKind.JOINED and step.new_prediction == pred
    assert step.outcome is not None and step.outcome.true_label == 1
    assert step.outcome.label_time == T0 - 5 and step.outcome.delay_ms == 995


def test_duplicate_predictions_keep_the_first_and_are_not_counted_again() -> None:
    first, retry = prediction(3, 0.1, 0), prediction(3, 0.7, 1)
    stored = on_prediction(None, first, T0)
    dup = on_prediction(stored.pending, retry, T0 + 5)
    assert dup.kind is StepKind.DUPLICATE_PREDICTION and dup.new_prediction is None
    assert dup.pending == stored.pending
    joined = on_label(dup.pending, label(3, 1), T0 + 9)
    assert joined.outcome is not None and joined.outcome.prediction == first
    late_retry = on_prediction(joined.pending, retry, T0 + H - 1)
    assert late_retry.kind is StepKind.DUPLICATE_PREDICTION and late_retry.outcomes == ()


def test_duplicate_labels_keep_the_first() -> None:
    stored = on_label(None, label(4, "fraud"), T0)
    dup = on_label(stored.pending, label(4, "legit"), T0 + 1)
    assert dup.kind is StepKind.DUPLICATE_LABEL and dup.pending == stored.pending
    step = on_prediction(dup.pending, prediction(4, 0.5, "fraud"), T0 + 2)
    assert step.outcome is not None and step.outcome.true_label == "fraud"
    after = on_label(step.pending, label(4, "legit"), T0 + 3)
    assert after.kind is StepKind.DUPLICATE_LABEL and after.outcomes == ()


def test_a_prediction_with_its_own_true_label_joins_at_once() -> None:
    pred = prediction(5, 0.8, 1, true_label=1)
    step = on_prediction(None, pred, T0)
    assert step.kind is StepKind.JOINED and step.new_prediction == pred
    assert step.outcome is not None and step.outcome.inline and step.outcome.delay_ms is None
    assert on_label(step.pending, label(5, 0), T0 + 1).kind is StepKind.DUPLICATE_LABEL
    # With a label already waiting, the first label wins over the inline one.
    waiting = on_label(None, label(6, 0), T0).pending
    step = on_prediction(waiting, prediction(6, 0.8, 1, true_label=1), T0 + 1)
    assert step.outcome is not None and step.outcome.true_label == 0 and not step.outcome.inline


def test_each_model_version_joins_the_one_label() -> None:
    a, b, c = (prediction(7, 0.3, 0, version=v) for v in ("1", "2", "3"))
    state = on_prediction(on_prediction(None, a, T0).pending, b, T0 + 1).pending
    assert state is not None and len(state.predictions) == 2
    step = on_label(state, label(7, 1), T0 + 2)
    assert [o.prediction for o in step.outcomes] == [a, b] and step.outcome is None
    late = on_prediction(step.pending, c, T0 + 3)
    assert late.kind is StepKind.JOINED and late.outcome is not None
    assert on_prediction(late.pending, b, T0 + 4).kind is StepKind.DUPLICATE_PREDICTION


def test_without_markers_a_joined_entry_is_deleted() -> None:
    config = JoinConfig(keep_joined=False)
    stored = on_prediction(None, prediction(8, 0.3, 0), T0, config)
    assert on_label(stored.pending, label(8), T0 + 1, config).pending is None
    assert on_prediction(None, prediction(8, 0.3, 0, true_label=0), T0, config).pending is None


def test_expiry_at_the_horizon_edge() -> None:
    pred = prediction(9, 0.3, 0)
    waiting = Pending(T0, (pred,))
    assert expire(waiting, T0 + H - 1) is None
    assert expire(waiting, T0 + H) == Expiry(expired_predictions=(pred,))
    lonely = Pending(T0, label=label(9))
    assert expire(lonely, T0 + H) == Expiry(unmatched_label=label(9))
    marker = on_label(waiting, label(9), T0 + 5).pending
    assert marker is not None and expire(marker, T0 + 5 + H - 1) is None
    assert expire(marker, T0 + 5 + H) == Expiry()  # a marker leaves nothing behind
    assert expire(waiting, T0 + 10, horizon_ms=10) is not None


def test_a_label_one_ms_before_the_horizon_joins_and_at_the_horizon_does_not() -> None:
    pred = prediction(10, 0.3, 0)
    waiting = on_prediction(None, pred, T0).pending
    in_time = on_label(waiting, label(10), T0 + H - 1)
    assert in_time.kind is StepKind.JOINED and in_time.expired is None
    too_late = on_label(waiting, label(10, at=T0 + H), T0 + H)
    assert too_late.kind is StepKind.STORED_LABEL and too_late.outcomes == ()
    assert too_late.expired == Expiry(expired_predictions=(pred,))
    assert too_late.pending == Pending(T0 + H, label=label(10, at=T0 + H))
    # A retried prediction after its entry expired is a new one (and is reported so).
    again = on_prediction(in_time.pending, pred, T0 + H - 1 + H)
    assert again.kind is StepKind.STORED_PREDICTION and again.expired == Expiry()


def test_join_stats_count_everything_and_bucket_delays() -> None:
    stats = JoinStats()
    steps = [
        on_prediction(None, prediction(1, 0.1, 0, event_ts=T0), T0),
        on_label(Pending(T0, (prediction(1, 0.1, 0, event_ts=T0),)), label(1, ts=T0 + 1000), T0),
        on_label(None, label(2), T0),
        on_prediction(None, prediction(3, 0.1, 0, true_label=0), T0),
    ]
    steps.append(on_prediction(steps[0].pending, prediction(1, 0.1, 0), T0))
    steps.append(on_label(steps[2].pending, label(2), T0))
    for step in steps:
        stats = add_step(stats, step)
    stats = add_expiry(stats, Expiry((prediction(4, 0.1, 0), prediction(5, 0.1, 0)), None))
    stats = add_expiry(stats, Expiry(unmatched_label=label(2)))
    assert stats.to_dict()["counts"] == {
        "predictions": 2, "duplicate_predictions": 1, "labels": 2, "duplicate_labels": 1,
        "joined": 1, "joined_inline": 1, "expired_predictions": 2, "unmatched_labels": 1,
    }
    assert stats.delay_counts[0] == 1 and sum(stats.delay_counts) == 1
    back = JoinStats.from_dict(orjson.loads(orjson.dumps(stats.to_dict())))
    assert back == stats and back.merge(JoinStats()) == stats
    assert stats.merge(back).to_dict()["counts"]["joined"] == 2


@pytest.mark.parametrize(("delay_ms", "bucket"), [
    (-5000, 0), (0, 0), (1000, 0), (1001, 1), (5000, 1), (86_400_000, 8),
    (86_400_001, 9), (10**12, 9),
])
def test_delay_buckets_are_upper_inclusive(delay_ms: int, bucket: int) -> None:
    assert delay_bucket(delay_ms) == bucket
    assert len(DELAY_BUCKETS_S) == 10


def test_every_pending_shape_round_trips_through_json() -> None:
    shapes = [
        Pending(T0, (prediction(1, 0.5, 1, event_ts=T0 - 1),)),
        Pending(T0, (prediction(1, {"a": 0.25, "b": 0.75}, "b"),
                     prediction(1, 2.5, 2.5, version="9"))),
        Pending(T0, label=label(1, "x", ts=T0 - 3)),
        Pending(T0, label=label(1, 2.5), joined=(("m|x", "v"), ("m", "2"))),
    ]
    for shape in shapes:
        assert roundtrip(shape) == shape


Message = PredictionView | LabelView


def random_stream(seed: int) -> tuple[list[tuple[int, Message]], dict[str, tuple[float, object]]]:
    """Random ids over two days: retried predictions, repeated labels (first value wins),
    labels first or late or never. Returns the messages in arrival order and each
    id's expected (score, true label)."""
    rng = np.random.default_rng(seed)
    events: list[tuple[int, int, Message]] = []
    expected: dict[str, tuple[float, object]] = {}
    for i in range(1500):
        t = T0 + int(rng.integers(0, 2 * H))
        score = float(rng.random())
        first_value = int(rng.integers(0, 2))
        copies = 1 + int(rng.random() < 0.2) + int(rng.random() < 0.1)
        for k in range(copies):  # retries within ten minutes, later ones with other scores
            pred = prediction(i, score if k == 0 else score / 2, 0, event_ts=t - 100)
            events.append((t + 600_000 * k, 0, pred))
        if rng.random() < 0.8:
            lt = t + int(rng.normal(0, H / 2))
            for k in range(1 + int(rng.random() < 0.2)):
                lab = label(i, first_value if k == 0 else 1 - first_value, at=lt + 1000 * k)
                events.append((lt + 1000 * k, 1, lab))
            expected[f"e{i}"] = (score, first_value)
    events.sort(key=lambda e: (e[0], e[1]))
    return [(t, m) for t, _, m in events], expected


def simulate(
    messages: list[tuple[int, Message]], sweep_every_ms: int | None
) -> tuple[JoinStats, list[Outcome]]:
    """Run the join over a store of pending entries, sweeping expiry now and then."""
    store: dict[str, Pending] = {}
    stats, next_sweep = JoinStats(), T0
    outcomes: list[Outcome] = []

    def sweep(now: int) -> None:
        nonlocal stats
        for key in list(store):
            expiry = expire(store[key], now)
            if expiry is not None:
                del store[key]
                stats = add_expiry(stats, expiry)

    for now, message in messages:
        if sweep_every_ms is not None and now >= next_sweep:
            sweep(now)
            next_sweep = now + sweep_every_ms
        if isinstance(message, PredictionView):
            step = on_prediction(store.get(message.id), message, now)
        else:
            step = on_label(store.get(message.id), message, now)
        stats = add_step(stats, step)
        outcomes.extend(step.outcomes)
        if step.pending is None:
            store.pop(message.id, None)
        else:
            store[message.id] = step.pending
    sweep(T0 + 10 * H)
    assert not store
    return stats, outcomes


@pytest.mark.parametrize("seed", range(2))
def test_random_streams_join_each_pair_once_whatever_the_sweep_rate(seed: int) -> None:
    messages, expected = random_stream(seed)
    stats, outcomes = simulate(messages, sweep_every_ms=None)
    c = stats.to_dict()["counts"]
    assert c["predictions"] == 1500 and c["joined_inline"] == 0
    assert c["joined"] + c["expired_predictions"] == c["predictions"]
    assert c["labels"] == c["joined"] + c["unmatched_labels"]
    assert c["duplicate_predictions"] > 0 and c["duplicate_labels"] > 0
    assert sum(stats.delay_counts) == c["joined"] == len(outcomes)
    assert 0 < c["joined"] < len(expected)  # some labels came too late or too early
    ids = [o.prediction.id for o in outcomes]
    assert len(ids) == len(set(ids))
    for o in outcomes:
        assert (o.prediction.score, o.true_label) == expected[o.prediction.id]
    for every in (60_000, 3_600_000):
        other_stats, other_outcomes = simulate(messages, sweep_every_ms=every)
        assert other_stats == stats and other_outcomes == outcomes
