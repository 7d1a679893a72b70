"""The top reasons behind alerts: counts equal a recount, alerts only, first sightings only,
the caps, the ranking, the wire forms and /api/reasons."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson

from tests.unit.monitor.gen import BINARY, REGRESSION, T0
from worker.core.records import NO_POSITIVE_REASON, read_top_reason
from worker.monitor.aggregate import WindowAgg
from worker.monitor.codec import Block, decode_block
from worker.monitor.join import JoinConfig
from worker.monitor.reasons import (
    OTHER,
    ReasonRow,
    cap_reasons,
    count_name,
    reason_counts,
    reason_rows,
    reasons_status,
)
from worker.monitor.rekey import rekey
from worker.monitor.stage_global import GlobalPartition
from worker.monitor.stages import JoinPartition
from worker.monitor.store import MemoryStore
from worker.monitor.windows import ROLLING

FEATURES = ("amount", "country", "hour", "velocity")


def reasons(*pairs: tuple[str, float]) -> dict[str, object]:
    return {"baseline": -3.0, "output": "log_odds",
            "top": [{"feature": f, "value": 1, "contribution": c} for f, c in pairs]}


def test_the_top_reason_is_the_largest_positive_contribution() -> None:
    assert read_top_reason({"reasons": reasons(("amount", 2.0), ("hour", 1.0))}) == "amount"
    # sorted by size: a larger negative one first, then the first positive one
    assert read_top_reason({"reasons": reasons(("hour", -3.0), ("country", 0.5))}) == "country"
    assert read_top_reason({"reasons": reasons(("hour", -3.0))}) == NO_POSITIVE_REASON
    assert read_top_reason({"reasons": reasons(("x" * 100, 1.0))}) == "x" * 64
    for bad in (None, {}, {"top": []}, {"top": "amount"}, {"top": [{"feature": 3}]},
                reasons(("amount", "big")), {"top": [1]}):  # type: ignore[arg-type]
        assert read_top_reason({"reasons": bad}) == ""
    assert read_top_reason({}) == ""


def messages(seed: int, n: int) -> tuple[list[dict[str, object]], Counter[str]]:
    """n predictions of one binary version in one 5-minute window, 4 in 5 with reasons;
    and the recount of the alerts' top reasons."""
    rng = np.random.default_rng(seed)
    out, expected = [], Counter[str]()
    for i in range(n):
        score = float(rng.random())
        amounts = rng.normal(0, 1, len(FEATURES))
        order = np.argsort(-np.abs(amounts), kind="stable")[:3]
        t = T0 - T0 % 300_000 + int(rng.integers(0, 300_000))
        msg: dict[str, object] = {"id": f"e{i}", "score": score, "label": int(score >= 0.7),
                                  "model": "fraud", "model_version": "1", "scored_at": t}
        if i % 5:
            msg["reasons"] = reasons(*((FEATURES[j], float(amounts[j])) for j in order))
            if score >= 0.7:
                positive = [FEATURES[j] for j in order if amounts[j] > 0]
                expected[positive[0] if positive else NO_POSITIVE_REASON] += 1
        out.append(msg)
    return out, expected


def run(msgs: list[dict[str, object]], partitions: int = 2, retries: int = 0
        ) -> tuple[GlobalPartition, list[tuple[str, bytes | None]], list[JoinPartition]]:
    items = [(True, orjson.dumps(m), T0 + 300_000, 0) for m in msgs]
    items += items[:retries]  # a worker's retry: the same prediction again
    parts = [JoinPartition(p, ["5m"], lambda _p: BINARY, MemoryStore(), JoinConfig())
             for p in range(partitions)]
    gp = GlobalPartition(0, ["5m"], lambda _m, _v: BINARY, (), retain_ms=10**12)
    partials = []
    for p, block in rekey(items, partitions, "true_label").items():
        parts[p].apply(decode_block(block.encode()))
        partials += [(k, orjson.loads(v)) for k, v in parts[p].flush()[1]]
    changes, _, _ = gp.apply(partials, T0 + 300_000)
    return gp, list(changes.items()), parts


def test_alerts_top_reasons_equal_a_recount_across_partitions_retries_and_a_restore() -> None:
    msgs, expected = messages(1, 3000)
    gp, changes, _ = run(msgs, partitions=3, retries=500)
    snap = gp.tick(T0 + 300_000)[3]
    for window in (ROLLING, "5m"):
        rows = snap.reasons[("fraud", "1", window)]
        total = sum(expected.values())
        # 4 features and __none__: fewer than TOP_K, so every one is a row of its own
        assert {r.feature: r.alerts for r in rows} == dict(expected)
        assert [r.alerts for r in rows] == sorted((r.alerts for r in rows), reverse=True)
        assert all(r.share == r.alerts / total for r in rows)
    restored = GlobalPartition(0, ["5m"], lambda _m, _v: BINARY, (), retain_ms=10**12)
    for key, value in changes:
        restored.restore(key, value)
    assert restored.tick(T0 + 300_000)[3].reasons == snap.reasons


def test_no_reasons_no_table_and_regression_has_no_alerts() -> None:
    msgs, _ = messages(2, 200)
    for m in msgs:
        m.pop("reasons", None)
    gp, _, _ = run(msgs)
    assert gp.tick(T0 + 300_000)[3].reasons == {}
    block = Block()
    block.add_prediction("r1", T0, "m", "1", 3.5, 3.5, T0, None, "", "amount")
    jp = JoinPartition(0, ["5m"], lambda _p: REGRESSION, MemoryStore(), JoinConfig())
    jp.apply(block)
    assert all(not reason_counts(a) for a in jp.partials.values())


def test_blocks_carry_reasons_and_read_blocks_without_them() -> None:
    block = Block()
    block.add_prediction("a", T0, "m", "1", 0.9, 1, T0, None, "", "amount")
    block.add_label("a", T0, 1, None)
    again = decode_block(block.encode())
    assert again.reasons == ["amount", ""]
    plain = Block()
    plain.add_prediction("b", T0, "m", "1", 0.1, 0, T0, None)
    assert b'"r"' not in plain.encode()  # blocks without reasons are the bytes they were
    assert decode_block(plain.encode()).reasons == [""]
    assert Block.concat([block, plain]).reasons == ["amount", "", ""]


def test_a_partial_keeps_at_most_the_cap_and_other_takes_the_rest() -> None:
    held = WindowAgg("binary", {"predicted": 5, count_name("a"): 3, count_name("b"): 2})
    delta = WindowAgg("binary", {"predicted": 4, count_name("b"): 1, count_name("d"): 1,
                                 count_name("c"): 2})
    capped = cap_reasons(held, delta, limit=3)
    assert reason_counts(capped) == {"b": 1, "c": 2, OTHER: 1}  # c admitted by name, d not
    assert capped.counts["predicted"] == 4
    assert cap_reasons(held, delta, limit=4) is delta
    full = held.merge(capped)
    assert reason_counts(cap_reasons(full, WindowAgg("binary", {count_name("e"): 7}), 3)) \
        == {OTHER: 7}


def test_rows_are_the_top_k_by_alerts_ties_by_name_then_other() -> None:
    agg = WindowAgg("binary", {"predicted": 40, count_name("b"): 5, count_name("a"): 5,
                               count_name("c"): 1, count_name("d"): 2,
                               count_name(OTHER): 3})
    rows = reason_rows(agg, k=2)
    assert rows == [ReasonRow("a", 5, 5 / 16), ReasonRow("b", 5, 5 / 16),
                    ReasonRow(OTHER, 6, 6 / 16)]
    assert reason_rows(WindowAgg("binary", {"predicted": 3})) == []
    doc = reasons_status({("m", "1", ROLLING): rows})
    assert doc == {"windows": [{"model": "m", "model_version": "1", "window": ROLLING,
                                "alerts": 16, "rows": [
                                    {"feature": "a", "alerts": 5, "share": 5 / 16},
                                    {"feature": "b", "alerts": 5, "share": 5 / 16},
                                    {"feature": OTHER, "alerts": 6, "share": 6 / 16}]}]}


def test_the_status_feed_serves_the_latest_table_and_the_page_draws_it() -> None:
    from worker.monitor_app.status_page import StatusFeed, page_html

    feed = StatusFeed((), ["5m"], "solo", clock_ms=lambda: T0)
    route = feed.routes()["/api/reasons"]
    assert orjson.loads(route()[1]) == {"windows": []}  # before the first tick
    rows = [ReasonRow("amount", 3, 0.75), ReasonRow(NO_POSITIVE_REASON, 1, 0.25)]
    feed.reasons({("fraud", "1", ROLLING): rows})
    status, body, kind = route()
    assert status == 200 and kind == "application/json"
    assert orjson.loads(body) == reasons_status({("fraud", "1", ROLLING): rows})
    page = page_html().decode()
    assert 'fetch("api/reasons"' in page and 'id="reasons"' in page
