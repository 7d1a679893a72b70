"""Figures per segment value: the sums equal a recount, the caps, the ranking and the rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from tests.unit.monitor.gen import BINARY, T0, binary_scores, binary_truth
from tests.unit.monitor.reference_join import window_deltas
from worker.core.records import read_segments
from worker.monitor.aggregate import WindowAgg, add_outcomes, add_predictions, merge_all
from worker.monitor.alerts import AlertRuleError, AlertState
from worker.monitor.catalog import metrics
from worker.monitor.codec import WAITING, Block, decode_block, decode_entry, encode_entry
from worker.monitor.deltas import batch_deltas
from worker.monitor.join import JoinConfig
from worker.monitor.records import alert_record
from worker.monitor.segments import (
    DEFAULT_SEGMENT_RULES,
    OTHER,
    SegmentFigures,
    evaluate_segments,
    parse_segment_rules,
    ranked,
    segment_figures,
)
from worker.monitor.stage_global import GlobalPartition
from worker.monitor.stages import JoinPartition
from worker.monitor.store import MemoryStore
from worker.monitor.views import Outcome, PredictionView
from worker.monitor.windows import ROLLING, WindowKey

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
COUNTRIES = ("DE", "FR", "IT", "ES", "NL")


def seg(**fields: str) -> str:
    return read_segments({"segments": fields})


def stream(seed: int, n: int) -> tuple[list[PredictionView], list[str], list[Outcome]]:
    """n binary predictions over 10 minutes, each with a country and a channel; 70 %
    labeled."""
    rng = np.random.default_rng(seed)
    s = binary_scores(rng, n)
    y = binary_truth(rng, s)
    times = (T0 + rng.integers(0, 600_000, n)).tolist()
    countries = rng.choice(len(COUNTRIES), n, p=[0.4, 0.3, 0.15, 0.1, 0.05]).tolist()
    channels = rng.choice(2, n).tolist()
    preds = [PredictionView(f"e{i}", v, int(v >= 0.3), "fraud", "1", t, t)
             for i, (v, t) in enumerate(zip(s.tolist(), times, strict=True))]
    segs = [seg(country=COUNTRIES[c], channel=("web", "app")[h])
            for c, h in zip(countries, channels, strict=True)]
    labeled = int(n * 0.7)
    outcomes = [Outcome(p, int(t), p.event_time + 5, p.event_time + 5)
                for p, t in zip(preds[:labeled], y[:labeled], strict=True)]
    return preds, segs, outcomes


def as_pred(p: PredictionView, segments: str) -> tuple[object, ...]:
    return (p.model, p.model_version, p.score, p.label, p.event_time, segments)


def test_segment_windows_equal_a_recount_of_their_events() -> None:
    preds, segs, outcomes = stream(1, 4000)
    seg_of = {p.id: s for p, s in zip(preds, segs, strict=True)}
    windows = ("1m", "5m")
    new = [as_pred(p, s) for p, s in zip(preds, segs, strict=True)]
    joined = [(as_pred(o.prediction, seg_of[o.prediction.id]), o.true_label, o.label_time,
               o.joined_at, False) for o in outcomes]
    fast = batch_deltas(windows, lambda _k, _p: BINARY, new, joined)  # type: ignore[arg-type]
    # the version's own windows are what they were without segments
    assert {k: v for k, v in fast.items() if not k.segment} == window_deltas(
        windows, lambda _p: BINARY, preds, outcomes)
    checked = 0
    for field, values in (("country", COUNTRIES), ("channel", ("web", "app"))):
        for value in values:
            mine = {p.id for p, s in zip(preds, segs, strict=True)
                    if f'"{field}","{value}"' in s}
            slow = window_deltas(windows, lambda _p: BINARY,
                                 [p for p in preds if p.id in mine],
                                 [o for o in outcomes if o.prediction.id in mine])
            got = {dataclasses.replace(k, segment=""): v for k, v in fast.items()
                   if k.segment == f"{field}={value}"}
            assert got == slow
            checked += len(slow)
    assert checked > 20


def test_the_join_carries_segments_to_late_labels_across_partitions_and_a_restart() -> None:
    """Predictions first, labels a block later, split over two join partitions: each
    segment's rolling figures equal a direct aggregate of its events; a JoinPartition
    rebuilt on the same store and a stage two restored from its changelog agree."""
    preds, segs, outcomes = stream(2, 3000)
    seg_of = {p.id: s for p, s in zip(preds, segs, strict=True)}
    stores = [MemoryStore(), MemoryStore()]
    parts = [JoinPartition(i, ["5m"], lambda _p: BINARY, st, JoinConfig()) for i, st in
             enumerate(stores)]
    gp = GlobalPartition(0, ["5m"], lambda _m, _v: BINARY, (), retain_ms=10**12)
    now = T0 + 700_000
    messages = []
    for rows in (preds, outcomes):
        blocks = [Block(), Block()]
        for r in rows:
            if isinstance(r, PredictionView):
                blocks[hash(r.id) % 2].add_prediction(r.id, now, r.model, r.model_version,
                                                      r.score, r.label, r.event_time, None,
                                                      seg_of[r.id])
            else:
                blocks[hash(r.prediction.id) % 2].add_label(r.prediction.id, now,
                                                            r.true_label, r.label_time)
        for jp, block in zip(parts, blocks, strict=True):
            jp.apply(decode_block(block.encode()))
            messages += [(k, orjson.loads(v)) for k, v in jp.flush()[1]]
            jp.store.commit()  # type: ignore[attr-defined]
    changes, _, _ = gp.apply(messages, now)
    _, published, _, snap = gp.tick(now)
    rows = {(r.field, r.value): r.figures for r in snap.segments[("fraud", "1", ROLLING)]}
    # every row of the segments table is on the metrics topic too, keyed by its segment
    schema = json.loads((SCHEMAS / "model_metrics.schema.json").read_text())
    on_topic = {}
    for key, value in published:
        record = orjson.loads(value)
        jsonschema.validate(record, schema)
        if "segment" in record and record["window"] == ROLLING:
            seg = record["segment"]
            assert key == f"fraud|1|rolling|{seg['field']}={seg['value']}"
            on_topic[(seg["field"], seg["value"])] = record
    assert set(on_topic) == set(rows)
    assert all(on_topic[k]["recall"] == rows[k]["recall"] for k in rows)
    for field, values in (("country", COUNTRIES), ("channel", ("web", "app"))):
        for value in values:
            mine = [p for p in preds if f'"{field}","{value}"' in seg_of[p.id]]
            ids = {p.id for p in mine}
            direct = add_outcomes(add_predictions(WindowAgg(), mine, BINARY),
                                  [o for o in outcomes if o.prediction.id in ids], BINARY)
            assert rows[(field, value)] == metrics(direct, BINARY.reference)
    restored = GlobalPartition(0, ["5m"], lambda _m, _v: BINARY, (), retain_ms=10**12)
    for key, value in changes.items():
        restored.restore(key, value)
    assert restored.tick(now)[3].segments == snap.segments
    again = JoinPartition(0, ["5m"], lambda _p: BINARY, stores[0], JoinConfig())
    some = next(k for k in parts[0].dirty | set(parts[0].partials) if k.segment)
    assert again.partial(some) == parts[0].partial(some)


def test_a_partition_keeps_at_most_values_max_per_window_and_after_a_restart_alike() -> None:
    store = MemoryStore()

    def feed(jp: JoinPartition, values: list[str], start: int) -> set[str]:
        block = Block()
        for i, v in enumerate(values):
            block.add_prediction(f"x{start + i}", T0, "m", "1", 0.5, 1, T0, None, seg(shop=v))
        jp.apply(block)
        jp.flush()
        store.commit()
        return {k.segment for k in jp.partials if k.segment and k.window == "5m"}

    jp = JoinPartition(0, ["5m"], lambda _p: BINARY, store, JoinConfig(), segment_values_max=3)
    assert feed(jp, ["a", "b", "c", "d", "e"], 0) == {"shop=a", "shop=b", "shop=c",
                                                       f"shop={OTHER}"}
    # a restarted partition reads the three admitted values back: "f" is other, "b" is b
    again = JoinPartition(0, ["5m"], lambda _p: BINARY, store, JoinConfig(),
                          segment_values_max=3)
    assert feed(again, ["f", "b"], 10) == {"shop=b", f"shop={OTHER}"}
    other = again.partial(WindowKey("m", "1", "5m", T0 - T0 % 300_000, f"shop={OTHER}"))
    assert other.counts["predicted"] == 3  # d, e, then f


def agg(predicted: int, labeled: int = 0) -> WindowAgg:
    return WindowAgg("binary", {"predicted": predicted, "count": labeled})


def test_top_k_by_traffic_ties_by_value_and_the_rest_merged_as_other() -> None:
    values = {"a": agg(5), "b": agg(9), "c": agg(5, 3), "d": agg(5, 3), "e": agg(1),
              OTHER: agg(4)}
    top = ranked(values, 3)
    assert [v for v, _ in top] == ["b", "c", "d", OTHER]
    assert top[-1][1] == merge_all([agg(5), agg(1), agg(4)])
    assert sum(a.counts["predicted"] for _, a in top) == sum(
        a.counts["predicted"] for a in values.values())
    # the same sums in any order, split any way: the same choice
    assert ranked(dict(reversed(list(values.items()))), 3) == top
    assert [v for v, _ in ranked({"a": agg(1)}, 3)] == ["a"]


def test_segment_figures_bound_the_rows_per_field() -> None:
    aggs = {f"country={i:02d}": agg(100 - i) for i in range(50)}
    aggs |= {"channel=web": agg(3)}
    rows = segment_figures(aggs, 20)
    assert [r.field for r in rows].count("country") == 21
    assert [r.value for r in rows if r.field == "country"][-1] == OTHER
    assert len(rows) == 22


def recall_rows(recall_de: float, labeled: int) -> list[SegmentFigures]:
    base = {"count": labeled, "predicted": labeled, "coverage": 1.0}
    return [SegmentFigures("country", "DE", {**base, "recall": recall_de}),
            SegmentFigures("country", "FR", {**base, "recall": 0.7})]


def test_the_segment_rule_fires_for_the_segment_only_with_enough_labels() -> None:
    window = WindowKey("fraud", "1", ROLLING, T0)
    states, fired = evaluate_segments({}, DEFAULT_SEGMENT_RULES, recall_rows(0.1, 499), window,
                                      T0)
    assert fired == []
    states, fired = evaluate_segments(states, DEFAULT_SEGMENT_RULES, recall_rows(0.1, 500),
                                      window, T0 + 1)
    assert [(a.status, a.rule.name) for a in fired] == [
        ("firing", "segment_recall_low:country=DE")]
    record = alert_record(fired[0])
    assert record["segment"] == {"field": "country", "value": "DE"}
    assert record["value"] == 0.1 and record["basis_count"] == 500
    schema = json.loads((SCHEMAS / "model_alert.schema.json").read_text())
    jsonschema.validate(record, schema)
    # firing once, then resolved, then held back by the cooldown
    states, fired = evaluate_segments(states, DEFAULT_SEGMENT_RULES, recall_rows(0.1, 900),
                                      window, T0 + 2)
    assert fired == []
    states, fired = evaluate_segments(states, DEFAULT_SEGMENT_RULES, recall_rows(0.5, 900),
                                      window, T0 + 3)
    assert [a.status for a in fired] == ["resolved"]
    states, fired = evaluate_segments(states, DEFAULT_SEGMENT_RULES, recall_rows(0.1, 900),
                                      window, T0 + 4)
    assert fired == []
    key = "segment_recall_low:country=DE|fraud|1"
    assert states[key] == AlertState("ok", None, T0 + 3)


def test_a_firing_segment_alert_resolves_as_evicted_when_its_segment_leaves_the_top_k(
) -> None:
    window = WindowKey("fraud", "1", ROLLING, T0)
    other = WindowKey("fraud", "2", ROLLING, T0)
    states, fired = evaluate_segments({}, DEFAULT_SEGMENT_RULES, recall_rows(0.1, 600), window,
                                      T0)
    states, _ = evaluate_segments(states, DEFAULT_SEGMENT_RULES, recall_rows(0.1, 600), other,
                                  T0)
    assert [a.rule.name for a in fired] == ["segment_recall_low:country=DE"]
    only_fr = recall_rows(0.1, 600)[1:]  # DE left the top K: its figures are not shown
    states, fired = evaluate_segments(states, DEFAULT_SEGMENT_RULES, only_fr, window, T0 + 5)
    assert [(a.status, a.rule.name, a.reason, a.value) for a in fired] == [
        ("resolved", "segment_recall_low:country=DE", "evicted", None)]
    record = alert_record(fired[0])
    assert record["reason"] == "evicted" and record["firing_since"] == T0
    assert record["segment"] == {"field": "country", "value": "DE"}
    jsonschema.validate(record, json.loads((SCHEMAS / "model_alert.schema.json").read_text()))
    assert states["segment_recall_low:country=DE|fraud|1"] == AlertState("ok", None, T0 + 5)
    assert states["segment_recall_low:country=DE|fraud|2"].status == "firing"  # its own
    assert evaluate_segments(states, DEFAULT_SEGMENT_RULES, [], window, T0 + 6)[1] == []
    # another window size's rule, or a rule of another field, does not touch it
    fr_only = [dataclasses.replace(DEFAULT_SEGMENT_RULES[0], field="channel")]
    assert evaluate_segments(states, fr_only, [], other, T0 + 7)[1] == []


def test_segment_rules_parse_like_accuracy_rules_plus_a_field() -> None:
    (rule,) = parse_segment_rules([{"name": "r", "field": "country", "metric": "precision",
                                    "op": "<", "threshold": 0.5, "window": "5m"}])
    assert rule.field == "country" and rule.rule.min_count == 500
    assert rule.rule.window == "5m" and rule.applies_to("country")
    assert not rule.applies_to("channel")
    with pytest.raises(AlertRuleError, match="'field'"):
        parse_segment_rules([{"name": "r", "metric": "recall", "op": "<", "threshold": 0.2}])
    with pytest.raises(AlertRuleError, match="segment alert rule 'r': unknown metric"):
        parse_segment_rules([{"name": "r", "field": "*", "metric": "nope", "op": "<",
                              "threshold": 0.2}])
    with pytest.raises(AlertRuleError, match="duplicate"):
        parse_segment_rules([{"name": "r", "field": "*", "metric": "recall", "op": "<",
                              "threshold": 0.2}] * 2)


def test_entries_and_blocks_carry_segments_and_read_the_old_formats() -> None:
    plain = (WAITING, T0, (("m", "1", 0.25, 0, T0, ""),))
    both = (WAITING, T0, (("m", "1", 0.25, 0, T0, seg(country="DE")),
                          ("m", "2", 0.5, 1, T0, "")))
    for entry in (plain, both):
        assert decode_entry(encode_entry(entry)) == entry
    assert b"country" not in encode_entry(plain)
    block = Block()
    block.add_prediction("a", T0, "m", "1", 0.5, 1, T0, None)
    assert b'"g"' not in block.encode()  # a block without segments is as before
    block.add_prediction("b", T0, "m", "1", 0.5, 1, T0, None, seg(country="FR"))
    block.add_label("a", T0, 1, None)
    assert decode_block(block.encode()).segs == ["", seg(country="FR"), ""]


def test_read_segments_keeps_what_fits_the_schema() -> None:
    assert read_segments({}) == ""
    assert read_segments({"segments": {"b": "2", "a": "1"}}) == '[["a","1"],["b","2"]]'
    assert read_segments({"segments": {"a": 1, "b": "x" * 65, "c=d": "e"}}) == ""
    assert read_segments({"segments": ["a"]}) == ""
