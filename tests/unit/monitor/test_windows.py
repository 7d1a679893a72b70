"""Epoch-aligned tumbling windows, window specs, keys and the rolling view's edges."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.unit.monitor.gen import BINARY, T0, prediction
from worker.monitor.aggregate import WindowAgg, add_predictions, merge_all
from worker.monitor.global_window import rolling_view
from worker.monitor.windows import (
    HOUR_MS,
    MINUTE_MS,
    ROLLING,
    WindowKey,
    in_rolling_view,
    keys_for,
    parse_window,
    rolling_bounds,
    rolling_bucket_starts,
    rolling_key,
    window_bounds,
    window_start,
)

FIVE = 5 * MINUTE_MS


@pytest.mark.parametrize(("spec", "ms"), [
    ("30s", 30_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000), ("250ms", 250),
    ("90m", 5_400_000),
])
def test_window_specs(spec: str, ms: int) -> None:
    assert parse_window(spec) == ms


@pytest.mark.parametrize("spec", ["", "5", "m", "0m", "-5m", "5 m", "5M", "1.5h", "05m", "1w",
                                  " 5m", "rolling", 5, None])
def test_bad_window_specs_are_refused_clearly(spec: object) -> None:
    with pytest.raises(ValueError, match="bad window"):
        parse_window(spec)  # type: ignore[arg-type]


def test_tumbling_windows_are_aligned_to_the_epoch_and_half_open() -> None:
    rng = np.random.default_rng(0)
    for ts in rng.integers(-10**13, 10**13, 500).tolist():
        for size in (1000, FIVE, HOUR_MS, 86_400_000):
            start, end = window_bounds(ts, size)
            assert start % size == 0 and start <= ts < end and end - start == size
    assert window_start(3_600_000, HOUR_MS) == 3_600_000
    assert window_start(3_599_999, HOUR_MS) == 0
    assert window_start(-1, HOUR_MS) == -HOUR_MS


def test_rolling_view_is_the_12_buckets_starting_in_the_last_hour() -> None:
    e = window_start(T0, FIVE) + FIVE  # an exact bucket boundary
    assert rolling_bounds(e) == (e + FIVE - HOUR_MS, e + FIVE)  # includes the bucket in progress
    assert rolling_bounds(e - 1) == (e - HOUR_MS, e)
    assert rolling_bounds(e + FIVE - 1) == (e + FIVE - HOUR_MS, e + FIVE)
    for now in (e, e - 1, e + 1, e + FIVE - 1):
        starts = rolling_bucket_starts(now)
        assert len(starts) == 12 and starts == sorted(starts)
        for s in range(starts[0] - 3 * FIVE, starts[-1] + 3 * FIVE, FIVE):
            assert in_rolling_view(s, now) == (s in starts)
            # The definition: the bucket's start lies in (now - 1h, now].
            assert in_rolling_view(s, now) == (now - HOUR_MS < s <= now)
    assert e in rolling_bucket_starts(e) and e not in rolling_bucket_starts(e - 1)
    with pytest.raises(ValueError):
        rolling_bounds(e, span_ms=HOUR_MS, step_ms=7 * MINUTE_MS)


def test_rolling_view_merges_exactly_the_buckets_in_view() -> None:
    e = window_start(T0, FIVE) + 20 * FIVE
    buckets = {}
    for k in range(-20, 5):
        start = e + k * FIVE
        preds = [prediction(100 * (k + 20) + j, 0.01 * j, 0, t=start + j) for j in range(k + 21)]
        buckets[start] = add_predictions(WindowAgg(), preds, BINARY)
    view = rolling_view(buckets, e)
    assert view == merge_all(buckets[e + k * FIVE] for k in range(-11, 1))
    assert rolling_view(buckets, e - 1) == merge_all(buckets[e + k * FIVE] for k in range(-12, 0))
    assert rolling_view({}, e) == WindowAgg()


def test_window_keys_round_trip_and_escape_separators() -> None:
    key = WindowKey("fraud|eu", "1%7C", "5m", T0 - T0 % FIVE)
    text = key.kafka_key()
    assert text.count("|") == 3 and WindowKey.parse_key(text) == key
    assert WindowKey.from_dict(orjson.loads(orjson.dumps(key.to_dict()))) == key
    assert key.end_ms == key.start_ms + FIVE
    rolling = rolling_key("fraud", "1", T0)
    assert rolling.kafka_key() == "fraud|1|rolling" and rolling.window == ROLLING
    assert rolling.end_ms - rolling.start_ms == HOUR_MS
    for bad in ("a|b|c", "a|b|5m|x", "a|b|rolling|0", "a|b|7q|0"):
        with pytest.raises(ValueError):
            WindowKey.parse_key(bad)
    keys = keys_for("m", "v", T0, ("5m", "1h", "1d"))
    assert [k.start_ms <= T0 < k.end_ms for k in keys] == [True] * 3
