"""Batch mode: score a JSONL or CSV file through the very pipeline of the worker.

Each input row becomes the bytes the worker would have read from Kafka (JSONL
lines as they are, CSV rows re-encoded as JSON objects), and goes through
``pipeline.score_values`` in chunks; so a file scored here and the same events
streamed through Kafka get identical predictions and identical rejections.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from worker.core.pipeline import INVALID_UTF8, Prediction, ScoringContext, score_values
from worker.errors import BatchInputError, ConfigError, Rejection, RejectKind

JSONL_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES: Final = (".csv",)
REJECTS_SUFFIX: Final = ".rejects.jsonl"

_INT_RE: Final = re.compile(r"^[+-]?\d+$")
_FLOAT_RE: Final = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1


@dataclass(frozen=True, slots=True)
class BatchSummary:
    rows: int
    scored: int
    rejected: int


@dataclass(frozen=True, slots=True)
class _Row:
    line: int  # 1-based data line (CSV: counted after the header)
    raw: str  # the original text, for the rejects file
    value: bytes | None  # what the pipeline sees; None when the row could not be parsed
    problem: Rejection | None = None


def rejects_path(out_path: Path) -> Path:
    return Path(str(out_path) + REJECTS_SUFFIX)


def score_file(
    in_path: Path, out_path: Path, ctx: ScoringContext, now_ms: int, chunk: int = 5000
) -> BatchSummary:
    """Score every row of ``in_path``; predictions to ``out_path``, rejects next to it."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    suffix = in_path.suffix.lower()
    if suffix not in JSONL_SUFFIXES + CSV_SUFFIXES:
        raise ConfigError(
            f"cannot tell the format of {in_path}: use .jsonl, .ndjson, .json or .csv"
        )
    rows = scored = rejected = 0
    with (
        in_path.open("rb") as source,
        out_path.open("wb") as out,
        rejects_path(out_path).open("wb") as rejects,
    ):
        reader = _csv_rows(source, str(in_path)) if suffix in CSV_SUFFIXES else _jsonl_rows(source)
        for batch in _chunks(reader, chunk):
            ok, bad = _score_chunk(batch, ctx, now_ms, out, rejects)
            rows, scored, rejected = rows + len(batch), scored + ok, rejected + bad
    return BatchSummary(rows=rows, scored=scored, rejected=rejected)


def _score_chunk(
    batch: list[_Row], ctx: ScoringContext, now_ms: int, out: BinaryIO, rejects: BinaryIO
) -> tuple[int, int]:
    parsed = [row for row in batch if row.problem is None]
    outcomes = iter(score_values([row.value for row in parsed], ctx, now_ms))
    scored = 0
    for row in batch:
        outcome = row.problem or next(outcomes)
        if isinstance(outcome, Prediction):
            out.write(outcome.payload + b"\n")
            scored += 1
        else:
            rejects.write(_reject_line(row, outcome))
    return scored, len(batch) - scored


def _reject_line(row: _Row, rejection: Rejection) -> bytes:
    record = {
        "line": row.line,
        "kind": rejection.kind.value,
        "reason": rejection.message,
        "raw": row.raw,
    }
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _chunks(rows: Iterable[_Row], size: int) -> Iterator[list[_Row]]:
    batch: list[_Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _jsonl_rows(source: BinaryIO) -> Iterator[_Row]:
    """One row per non-blank line; the bytes go to the pipeline untouched."""
    for number, line in enumerate(source, start=1):
        value = line.rstrip(b"\r\n")
        if value.strip():
            yield _Row(number, value.decode("utf-8", errors="replace"), value)


def _csv_rows(source: BinaryIO, name: str) -> Iterator[_Row]:
    # surrogateescape keeps undecodable bytes visible, so such rows can be
    # rejected as "decode" like the same bytes would be on Kafka.
    text = (line.decode("utf-8", errors="surrogateescape") for line in source)
    consumed: list[str] = []
    reader = csv.reader(_recording(text, consumed))
    try:
        header = next(reader, None)
        if header is None:
            return
        header[0] = header[0].removeprefix("\ufeff")  # spreadsheet exports start with a BOM
        consumed.clear()
        for number, cells in enumerate(reader, start=1):
            raw = "".join(consumed).rstrip("\r\n")
            consumed.clear()
            if any(cell.strip() for cell in cells):
                yield _csv_row(number, raw, header, cells)
    except csv.Error as exc:
        raise BatchInputError(f"{name}: CSV line {reader.line_num}: {exc}") from None


def _csv_row(number: int, raw: str, header: list[str], cells: list[str]) -> _Row:
    printable = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if printable != raw:
        return _Row(number, printable, None, INVALID_UTF8)
    if len(cells) > len(header):
        message = f"CSV row has {len(cells)} cells but the header has {len(header)}"
        return _Row(number, raw, None, Rejection(RejectKind.DECODE, message))
    event: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=False):
        if cell != "":
            event[name] = cell if name == "id" else _cell_value(cell)
    return _Row(number, raw, orjson.dumps(event))


def _cell_value(cell: str) -> Any:
    """Numbers for numeric-looking cells; everything else stays text."""
    text = cell.strip()
    if _INT_RE.match(text):
        whole = int(text)
        if _MIN_INT <= whole <= _MAX_INT:
            return whole
    elif not _FLOAT_RE.match(text):
        return cell
    # Ints beyond 64 bits become floats, as JSON readers would make them; a
    # value overflowing to inf stays text (orjson would write inf as null).
    number = float(text)
    return number if math.isfinite(number) else cell


def _recording(lines: Iterator[str], consumed: list[str]) -> Iterator[str]:
    """Pass lines to the csv reader, remembering them to recover each row's raw text."""
    for line in lines:
        consumed.append(line)
        yield line
