"""The second stage: partials per source merged to the same figures as one source."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.unit.monitor.gen import BINARY, REFERENCE, binary_outcomes
from worker.monitor.aggregate import WindowAgg, add_outcomes, add_predictions
from worker.monitor.catalog import metrics
from worker.monitor.global_window import GlobalWindow
from worker.monitor.views import Outcome


def partials_of(
    outcomes_by_source: list[list[int]], outcomes: list[Outcome], steps: int
) -> list[tuple[str, WindowAgg]]:
    """Cumulative partial of each source after each of ``steps`` growth steps."""
    updates = []
    for source, idx in enumerate(outcomes_by_source):
        agg = WindowAgg()
        for chunk in np.array_split(np.asarray(idx, dtype=int), steps):
            mine = [outcomes[i] for i in chunk]
            agg = add_predictions(add_outcomes(agg, mine, BINARY), [o.prediction for o in mine],
                                  BINARY)
            updates.append((str(source), agg))
    return updates


@pytest.mark.parametrize("sources", [2, 4])
def test_any_split_and_arrival_order_gives_the_single_source_figures(sources: int) -> None:
    rng = np.random.default_rng(sources)
    outcomes = binary_outcomes(rng, 2000)
    single = GlobalWindow().update("0", partials_of([list(range(2000))], outcomes, 1)[0][1])
    want = metrics(single.merged(), REFERENCE)
    for _ in range(3):
        owner = rng.integers(0, sources, len(outcomes))
        split = [np.flatnonzero(owner == s).tolist() for s in range(sources)]
        updates = partials_of(split, outcomes, steps=3)
        # Sources interleave at random; each source's own partials stay in order (one
        # partition of the first stage publishes them in order).
        queues: dict[str, list[int]] = {}
        for i, (source, _) in enumerate(updates):
            queues.setdefault(source, []).append(i)
        window = GlobalWindow()
        while queues:
            s = str(rng.choice(sorted(queues)))
            window = window.update(s, updates[queues[s].pop(0)][1])
            if not queues[s]:
                del queues[s]
        assert window.sources == sources
        assert window.merged() == single.merged()
        assert metrics(window.merged(), REFERENCE) == want
        back = GlobalWindow.from_dict(orjson.loads(orjson.dumps(window.to_dict())))
        assert back == window


def test_a_stale_partial_is_ignored_and_a_repeat_is_harmless() -> None:
    outcomes = binary_outcomes(np.random.default_rng(1), 100)
    small = add_outcomes(WindowAgg(), outcomes[:10], BINARY)
    big = add_outcomes(small, outcomes[10:], BINARY)
    window = GlobalWindow().update("p0", big)
    assert window.update("p0", small) == window  # a replayed older partial
    assert window.update("p0", big) == window
    assert window.update("p1", small).merged() == big.merge(small)
    assert GlobalWindow().merged() == WindowAgg()
