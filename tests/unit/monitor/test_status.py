"""The status board: what it keeps of the published records, its bounds, its JSON."""

from __future__ import annotations

import dataclasses
import urllib.request
from itertools import pairwise
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry
from referencing import Registry, Resource

from tests.unit.helpers import SCHEMAS
from worker.monitor.aggregate import WindowAgg
from worker.monitor.alerts import DEFAULT_RULES, AlertRecord
from worker.monitor.catalog import metrics
from worker.monitor.records import alert_record, metrics_record
from worker.monitor.status import SEEDED, StatusBoard, thin
from worker.monitor.windows import MINUTE_MS, WindowKey, rolling_key
from worker.monitor_app.status_page import StatusFeed
from worker.probes import Health, serve

T0 = 1_700_000_100_000 // (5 * MINUTE_MS) * (5 * MINUTE_MS)


def validator() -> Draft202012Validator:
    docs = {p.name: orjson.loads(p.read_bytes()) for p in SCHEMAS.glob("*.schema.json")}
    registry: Registry[Any] = Registry().with_resources(
        (d["$id"], Resource.from_contents(d)) for d in docs.values()
    )
    return Draft202012Validator(docs["status.schema.json"], registry=registry)


def figures(recall: float) -> dict[str, Any]:
    figs: dict[str, Any] = metrics(WindowAgg(task="binary"))
    figs.update(count=1000, predicted=1200, recall=recall, accuracy=0.9, roc_auc=0.8, psi=0.1,
                coverage=1000 / 1200)
    return figs


def window_rec(window: WindowKey, recall: float, at: int) -> tuple[str, bytes]:
    value = metrics_record(window, "binary", figures(recall), at, sources=4)
    return window.kafka_key(), orjson.dumps(value)


def rolling_rec(at: int, recall: float, model: str = "fraud") -> tuple[str, bytes]:
    return window_rec(rolling_key(model, "1", at), recall, at)


def alert_rec(status: str, at: int, model: str = "fraud") -> tuple[str, bytes]:
    rule = DEFAULT_RULES[0]  # recall < 0.6
    window = rolling_key(model, "1", at)
    rec = AlertRecord(status, rule, window, 0.4, 1000, at, at)  # type: ignore[arg-type]
    return rec.key(), orjson.dumps(alert_record(rec))


def test_keeps_closed_windows_rolling_points_alerts_and_join_stats() -> None:
    board = StatusBoard(DEFAULT_RULES, ["5m", "1h"], "solo", partitions=2)
    w1, w2 = WindowKey("fraud", "1", "5m", T0), WindowKey("fraud", "1", "5m", T0 + 5 * MINUTE_MS)
    board.on_metrics(0, [window_rec(w1, 0.7, T0 + 1000), window_rec(w2, 0.5, T0 + 2000)])
    board.on_metrics(0, [window_rec(w1, 0.65, T0 + 301_000)])  # a late label changed it
    for i in range(5):
        board.on_metrics(0, [rolling_rec(T0 + 305_000 + 1000 * i, round(0.6 - i / 100, 2))])
    board.on_alerts(0, [alert_rec("firing", T0 + 306_000)])
    board.on_join_stats(0, orjson.dumps(join_stats(T0 + 309_000)))
    board.tick(T0 + 309_000, [0, 1])
    doc = board.status(T0 + 309_000)
    validator().validate(doc)
    (model,) = doc["models"]
    assert [w["recall"] for w in model["windows"]["5m"]] == [0.65]  # w2 is not closed yet
    assert [p["recall"] for p in model["rolling_history"]] == [0.6, 0.59, 0.58, 0.57, 0.56]
    assert model["rolling"]["recall"] == 0.56
    assert [a["alert"] for a in doc["firing"]] == ["recall_low"]
    assert doc["join"]["joined"] == 10 and doc["partitions"]["complete"] is True
    assert {t["alert"] for t in doc["thresholds"]} == {"recall_low", "roc_auc_low", "psi_high"}
    board.on_alerts(0, [alert_rec("resolved", T0 + 310_000)])
    doc = board.status(T0 + 10 * MINUTE_MS)
    assert doc["firing"] == [] and len(doc["models"][0]["alert_events"]) == 2
    assert [w["recall"] for w in doc["models"][0]["windows"]["5m"]] == [0.65, 0.5]


def join_stats(at: int) -> dict[str, Any]:
    names = ("predictions", "duplicate_predictions", "labels", "duplicate_labels", "joined",
             "joined_inline", "expired_predictions", "unmatched_labels", "invalid")
    return {"computed_at": at, **dict.fromkeys(names, 10),
            "label_delay_seconds": {"1": 4, "10": 6, "+Inf": 0}}


def test_history_is_bounded_by_count_with_an_even_spacing_and_by_age() -> None:
    board = StatusBoard((), ["5m"], max_points=50, span_ms=3_600_000)
    for i in range(1000):  # one tick a second for 1000 s
        board.on_metrics(0, [rolling_rec(T0 + 1000 * i, 0.5)])
    points = board.models[("fraud", "1")].points
    fixed = points[:-1]  # the newest point floats: replaced until it is a step past these
    gaps = {b["at"] - a["at"] for a, b in pairwise(fixed)}
    assert 25 <= len(points) <= 50
    assert points[0]["at"] == T0 and points[-1]["at"] == T0 + 999_000  # whole span, newest kept
    step = board.models[("fraud", "1")].step_ms
    assert step >= 16_000 and step <= min(gaps) and max(gaps) < 2 * step, (step, gaps)
    for i in range(120):
        board.on_metrics(0, [window_rec(WindowKey("fraud", "1", "5m", T0 + i * 300_000), 0.5, 0)])
    assert len(board.models[("fraud", "1")].windows["5m"]) == 50  # the newest 50 windows
    board.tick(T0 + 2 * 3_600_000, [0])
    hist = board.models[("fraud", "1")]
    assert hist.points == []  # all older than the span
    assert min(hist.windows["5m"]) >= T0 + 3_600_000 - 300_000


def test_segment_records_on_the_metrics_topic_are_not_the_versions_figures() -> None:
    board = StatusBoard((), ["5m"])
    board.on_metrics(0, [rolling_rec(T0, 0.5)])
    segment = dataclasses.replace(rolling_key("fraud", "1", T0 + 1), segment="country=FR")
    board.on_metrics(0, [window_rec(segment, 0.1, T0 + 1)])
    hist = board.models[("fraud", "1")]
    assert hist.rolling is not None and hist.rolling["recall"] == 0.5
    assert len(hist.points) == 1


def test_thin_keeps_the_ends() -> None:
    pts = [{"at": t} for t in (0, 1, 2, 3, 10, 11, 25)]
    assert [p["at"] for p in thin(pts, 10)] == [0, 10, 25]
    assert [p["at"] for p in thin(pts[:2], 10)] == [1]


def test_an_instance_forgets_partitions_it_no_longer_owns() -> None:
    board = StatusBoard(DEFAULT_RULES, ["5m"], "a", partitions=4)
    board.on_metrics(0, [rolling_rec(T0, 0.5, "fraud")])
    board.on_metrics(3, [rolling_rec(T0, 0.5, "churn")])
    board.on_alerts(3, [alert_rec("firing", T0, "churn")])
    board.on_join_stats(3, orjson.dumps(join_stats(T0)))
    board.tick(T0 + 1000, [0, 3])
    assert {m["model"] for m in board.status(T0)["models"]} == {"fraud", "churn"}
    board.tick(T0 + 2000, [0])  # partition 3 went to another instance
    doc = board.status(T0 + 2000)
    assert [m["model"] for m in doc["models"]] == ["fraud"]
    assert doc["join"] is None and doc["firing"] == []
    assert doc["partitions"] == {"owned": [0], "total": 4, "complete": False}
    validator().validate(doc)


def test_serve_answers_extra_routes_beside_the_probes() -> None:
    feed = StatusFeed(DEFAULT_RULES, ["5m"], "solo", clock_ms=lambda: T0)
    feed.metrics(0, [rolling_rec(T0, 0.5)])
    server = serve(0, CollectorRegistry(), Health(stall_s=60), routes=feed.routes())
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/") as r:
            page = r.read().decode()
            assert r.headers["Content-Type"].startswith("text/html")
        with urllib.request.urlopen(base + "/api/status?x=1") as r:
            doc = orjson.loads(r.read())
        with urllib.request.urlopen(base + "/healthz") as r:
            assert r.status == 200
    finally:
        server.shutdown()
    assert "api/status" in page and "<script" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing external
    assert doc["generated_at"] == T0 and doc["models"][0]["rolling"]["recall"] == 0.5
    validator().validate(doc)


def test_seeded_history_is_adopted_by_its_owner_and_dropped_otherwise() -> None:
    board = StatusBoard(DEFAULT_RULES, ["5m"], "a", partitions=4)
    board.on_metrics(SEEDED, [rolling_rec(T0, 0.5, "fraud"), rolling_rec(T0, 0.5, "churn")])
    board.on_metrics(SEEDED, [(b"k", b"not json"), (None, orjson.dumps({"kind": "other"}))])
    board.on_alerts(SEEDED, [alert_rec("firing", T0, "churn"), (b"x", b'{"model_refused": 1}')])
    board.on_join_stats(SEEDED, orjson.dumps(join_stats(T0)))
    board.tick(T0 + 500, [])  # not assigned yet: the seeded figures stay
    assert len(board.status(T0 + 500)["models"]) == 2
    board.on_metrics(2, [rolling_rec(T0 + 1000, 0.4, "fraud")])  # the owner's first record
    board.tick(T0 + 1000, [2])
    doc = board.status(T0 + 1000)
    (fraud,) = doc["models"]  # churn belongs to another instance
    assert [p["recall"] for p in fraud["rolling_history"]] == [0.5, 0.4]
    assert doc["firing"] == [] and doc["join"] is None


def test_maturity_curves_are_kept_a_week_beyond_the_figures_span() -> None:
    board = StatusBoard(DEFAULT_RULES, ["1d"], "solo")
    day = 24 * 60 * MINUTE_MS
    start = T0 - T0 % day
    curve = [{"age_s": 3600, "coverage": 0.2}, {"age_s": None, "coverage": 0.5}]
    for d in range(10):
        window = WindowKey("fraud", "1", "1d", start + d * day)
        value = metrics_record(window, "binary", figures(0.7), start + (d + 1) * day,
                               details={"maturity": curve, "reliability": []})
        board.on_metrics(0, [(window.kafka_key(), orjson.dumps(value))])
    # A late label moves the newest window's curve: the board keeps the latest of each.
    newest = WindowKey("fraud", "1", "1d", start + 9 * day)
    later = [{"age_s": 3600, "coverage": 0.2}, {"age_s": None, "coverage": 0.9}]
    value = metrics_record(newest, "binary", figures(0.7), start + 11 * day,
                           details={"maturity": later, "reliability": []})
    board.on_metrics(0, [(newest.kafka_key(), orjson.dumps(value))])
    now = start + 11 * day
    board.tick(now, [0])
    doc = board.status(now)
    validator().validate(doc)
    (model,) = doc["models"]
    assert model["windows"] == {"1d": []}  # older than the 6 h span of the figures
    kept = model["maturity"]["1d"]
    assert [w["window_end"] for w in kept] == [start + (d + 1) * day for d in range(3, 10)]
    assert kept[-1]["maturity"] == later and kept[0]["maturity"] == curve
