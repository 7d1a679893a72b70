"""Batch mode: score a JSONL or CSV file through the very pipeline of the worker.

Each input row becomes the bytes the worker would have read from Kafka (JSONL
lines as they are, CSV rows re-encoded as JSON objects), and goes through
``pipeline.score_values`` in chunks; so a file scored here and the same events
streamed through Kafka get identical predictions and identical rejections.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from worker.core.decoders.csv import CsvDecoder
from worker.core.pipeline import Prediction, ScoringContext, score_values
from worker.errors import BatchInputError, ConfigError, Rejection

JSONL_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES: Final = (".csv",)
REJECTS_SUFFIX: Final = ".rejects.jsonl"



@dataclass(frozen=True, slots=True)
class BatchSummary:
    rows: int
    scored: int
    rejected: int


@dataclass(frozen=True, slots=True)
class _Row:
    line: int  # 1-based data line (CSV: counted after the header)
    raw: str  # the original text, for the rejects file
    value: bytes  # what the decoder sees: the row's own bytes


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
        reader: Iterator[_Row] = _jsonl_rows(source)
        if suffix in CSV_SUFFIXES:  # the same pipeline, with the CSV decoder for this header
            header, reader = _csv_rows(source, str(in_path))
            kinds = {f.name: f.type for f in ctx.bundle.manifest.feature_specs}
            ctx = replace(ctx, decoder=CsvDecoder(header, kinds))
        for batch in _chunks(reader, chunk):
            ok, bad = _score_chunk(batch, ctx, now_ms, out, rejects)
            rows, scored, rejected = rows + len(batch), scored + ok, rejected + bad
    return BatchSummary(rows=rows, scored=scored, rejected=rejected)


def _score_chunk(
    batch: list[_Row], ctx: ScoringContext, now_ms: int, out: BinaryIO, rejects: BinaryIO
) -> tuple[int, int]:
    outcomes = score_values([row.value for row in batch], ctx, now_ms)
    scored = 0
    for row, outcome in zip(batch, outcomes, strict=True):
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


def _csv_rows(source: BinaryIO, name: str) -> tuple[list[str], Iterator[_Row]]:
    """The header and the data rows, each with its own bytes (a quoted cell may span lines)."""
    # surrogateescape keeps undecodable bytes as they are, so the decoder sees the
    # row's original bytes and rejects them as "decode" like the same bytes on Kafka.
    text = (line.decode("utf-8", errors="surrogateescape") for line in source)
    consumed: list[str] = []
    reader = csv.reader(_recording(text, consumed))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BatchInputError(f"{name}: CSV line {reader.line_num}: {exc}") from None
    if header is None:
        return [], iter(())
    header[0] = header[0].removeprefix("\ufeff")  # spreadsheet exports start with a BOM
    consumed.clear()
    return header, _csv_data(reader, consumed, name)


def _csv_data(reader: Any, consumed: list[str], name: str) -> Iterator[_Row]:
    try:
        for number, cells in enumerate(reader, start=1):
            raw = "".join(consumed).rstrip("\r\n")
            consumed.clear()
            if any(cell.strip() for cell in cells):
                value = raw.encode("utf-8", "surrogateescape")
                yield _Row(number, value.decode("utf-8", "replace"), value)
    except csv.Error as exc:
        raise BatchInputError(f"{name}: CSV line {reader.line_num}: {exc}") from None


def _recording(lines: Iterator[str], consumed: list[str]) -> Iterator[str]:
    """Pass lines to the csv reader, remembering them to recover each row's raw text."""
    for line in lines:
        consumed.append(line)
        yield line
