"""Reason codes on the real broker: a worker with --explain 3 publishes the reasons that
``score-file --explain 3`` writes for the same events (a one-hot + imputer + logistic
regression pipeline on a DataFrame, with missing values)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.integration.helpers import WorkerProc, produce, read_topic
from tests.integration.model_kinds import KINDS
from worker.cli import main
from worker.model import write_bundle

TopicFactory = Callable[..., str]


def same_reasons(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the last bits (the stream and score-file cut batches differently)."""
    if a["output"] != b["output"] or not math.isclose(a["baseline"], b["baseline"],
                                                      abs_tol=1e-12):
        return False
    return [(r["feature"], r["value"]) for r in a["top"]] == [
        (r["feature"], r["value"]) for r in b["top"]] and all(
        math.isclose(x["contribution"], y["contribution"], abs_tol=1e-9)
        for x, y in zip(a["top"], b["top"], strict=True))


def test_streamed_reasons_equal_score_file_reasons(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path, report: Callable[[str], None],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kind = KINDS["payments-lr"]()
        bundle = write_bundle(tmp_path / "bundle", kind.estimator, name="payments",
                              version="1", task="binary", sample=kind.rows)
    events = kind.events()
    t = {"in": topic_factory("in", 2), "out": topic_factory("out", 2),
         "dlq": topic_factory("dlq", 1)}
    produce(kafka_bootstrap, t["in"], ((None, orjson.dumps(e)) for e in events))
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"], "--group",
                    group_factory(), "--model", str(bundle), "--metrics-port", "0",
                    "--explain", "3"], tmp_path / "worker.log")
    try:
        streamed = read_topic(kafka_bootstrap, t["out"], len(events), settle=0.5)
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    stream = {r["id"]: r for r in (orjson.loads(m.value or b"") for m in streamed)}
    src, out = tmp_path / "events.jsonl", tmp_path / "scored.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    assert main(["score-file", str(src), str(out), "--model", str(bundle), "--explain", "3"]) == 0
    batch = {r["id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert sorted(stream) == sorted(batch) == sorted(e["id"] for e in events)
    for ident, record in stream.items():
        reasons = record["reasons"]
        assert len(reasons["top"]) == 3 and reasons["output"] == "log_odds"
        assert same_reasons(reasons, batch[ident]["reasons"]), ident
        assert record["score"] == batch[ident]["score"] or math.isclose(
            record["score"], batch[ident]["score"], abs_tol=1e-12)
    features = {r["feature"] for rec in stream.values() for r in rec["reasons"]["top"]}
    assert features <= {"country", "channel", "amount", "items", "first_time", "risk"}
    report(f"reasons: {len(stream)} streamed predictions with --explain 3 equal score-file's; "
           f"features named {sorted(features)}")
