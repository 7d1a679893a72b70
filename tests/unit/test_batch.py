"""worker.batch: JSONL and CSV through the same pipeline, rejects with line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.unit.helpers import binary_bundle, event
from worker.batch import BatchSummary, rejects_path, score_file
from worker.core.pipeline import ScoringContext
from worker.errors import BatchInputError, ConfigError


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> ScoringContext:
    return ScoringContext(binary_bundle(tmp_path_factory.mktemp("model")))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_jsonl_predictions_and_rejects(tmp_path: Path, ctx: ScoringContext) -> None:
    source = tmp_path / "in.jsonl"
    lines = [orjson.dumps(event(0)), b"not json", b"", orjson.dumps(event(3, a="x")),
             b"[1]", orjson.dumps(event(5)) + b"\r", b"\xff\xfe"]
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    summary = score_file(source, out, ctx, now_ms=5, chunk=2)
    assert summary == BatchSummary(rows=6, scored=2, rejected=4)
    predictions = read_jsonl(out)
    assert [p["id"] for p in predictions] == ["e0", "e5"]
    assert all(p["scored_at"] == 5 for p in predictions)
    rejects = read_jsonl(rejects_path(out))
    assert rejects_path(out) == tmp_path / "out.jsonl.rejects.jsonl"
    assert [(r["line"], r["kind"]) for r in rejects] == [
        (2, "decode"), (4, "features"), (5, "schema"), (7, "decode"),
    ]
    assert rejects[0]["raw"] == "not json"
    assert rejects[1]["reason"] == "feature 'a' must be a finite number, got str"
    assert rejects[3]["reason"] == "value is not valid UTF-8"


def test_csv_cells_become_numbers_and_ids_stay_text(tmp_path: Path, ctx: ScoringContext) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "\ufeffid,ts,a,b,c,note\n"
        "007,1700000000000,1.5,-2,3,hello\n"
        "8,,1e2,.5,+4,\n"
        "9,1,,1,1,missing a\n"
        "10,1,abc,1,1,text in a number column\n"
        '11,1,1,1,1,"multi\nline"\n'
        "12,1,1e999,1,1,overflow\n"
        "13,1,1,1,1,x,extra cell\n"
        ",,,,,\n"
    )
    out = tmp_path / "out.jsonl"
    summary = score_file(source, out, ctx, now_ms=1)
    assert summary == BatchSummary(rows=7, scored=3, rejected=4)
    predictions = read_jsonl(out)
    assert [p["id"] for p in predictions] == ["007", "8", "11"]
    assert predictions[0]["event_ts"] == 1_700_000_000_000
    assert "event_ts" not in predictions[1]  # empty cell: no event time
    rejects = read_jsonl(rejects_path(out))
    assert [(r["line"], r["kind"]) for r in rejects] == [
        (3, "features"), (4, "features"), (6, "features"), (7, "decode"),
    ]
    assert rejects[0]["reason"] == "feature 'a' is missing"
    assert rejects[1]["reason"] == "feature 'a' must be a finite number, got str"
    assert rejects[2]["raw"] == "12,1,1e999,1,1,overflow"
    assert rejects[3]["reason"] == "CSV row has 7 cells but the header has 6"


def test_csv_and_jsonl_of_the_same_events_score_identically(
    tmp_path: Path, ctx: ScoringContext
) -> None:
    events = [event(i, a=i / 3, b=-i, c=i % 4) for i in range(25)]
    jsonl = tmp_path / "e.ndjson"
    jsonl.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    csv_file = tmp_path / "e.csv"
    csv_file.write_text("id,ts,a,b,c\n" + "".join(
        f"{e['id']},{e['ts']},{e['a']!r},{e['b']},{e['c']}\n" for e in events))
    score_file(jsonl, tmp_path / "j.out", ctx, 1, chunk=7)
    score_file(csv_file, tmp_path / "c.out", ctx, 1, chunk=1000)
    assert (tmp_path / "j.out").read_bytes() == (tmp_path / "c.out").read_bytes()
    assert len(read_jsonl(tmp_path / "j.out")) == 25


def test_csv_invalid_utf8_row_is_a_decode_reject(tmp_path: Path, ctx: ScoringContext) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,a,b,c\nx\xff,1,2,3\ny,1,2,3\n")
    summary = score_file(source, tmp_path / "o.jsonl", ctx, 1)
    assert summary == BatchSummary(rows=2, scored=1, rejected=1)
    (reject,) = read_jsonl(rejects_path(tmp_path / "o.jsonl"))
    assert (reject["line"], reject["kind"], reject["raw"]) == (1, "decode", "x\ufffd,1,2,3")


def test_unknown_extension_and_broken_csv(tmp_path: Path, ctx: ScoringContext) -> None:
    with pytest.raises(ConfigError, match=r"use \.jsonl, \.ndjson, \.json or \.csv"):
        score_file(tmp_path / "in.parquet", tmp_path / "o", ctx, 1)
    source = tmp_path / "big.csv"
    source.write_text("id,a\n1," + "9" * 200_000 + "\n")
    with pytest.raises(BatchInputError, match="CSV line 2"):
        score_file(source, tmp_path / "o", ctx, 1)


def test_empty_files(tmp_path: Path, ctx: ScoringContext) -> None:
    for name in ("e.csv", "e.jsonl"):
        (tmp_path / name).write_bytes(b"")
        assert score_file(tmp_path / name, tmp_path / "o", ctx, 1) == BatchSummary(0, 0, 0)
