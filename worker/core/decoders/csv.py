"""CSV rows (one record per value, the file's header given): score-file's CSV input.

Cells become event fields by the header: numeric-looking cells become numbers (as
a JSON reader would see them), the rest stays text; empty cells are absent fields;
``id`` always stays text. A model's typed features refine this (``kinds``): a string
feature's cells stay text ("007" is a category, not the number 7), and a boolean
feature's ``true``/``false`` cells become booleans, as they would be in JSON.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from worker.core.decoders import INVALID_UTF8, Decoded, precheck
from worker.errors import Rejection, RejectKind

_INT_RE: Final = re.compile(r"^[+-]?\d+$")
_FLOAT_RE: Final = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64 - 1


class CsvDecoder:
    """Each value is the raw bytes of one CSV record (a quoted cell may span lines)."""

    def __init__(self, header: Sequence[str], kinds: Mapping[str, str] | None = None) -> None:
        """``kinds``: column -> feature type (``string``, ``boolean``, ...) of the model."""
        self.header = list(header)
        self.kinds = {k: v for k, v in (kinds or {}).items() if v in ("string", "boolean")}

    def decode(self, values: Sequence[bytes | None], limit: int) -> Decoded:
        out = Decoded()
        for i, value in enumerate(values):
            outcome = precheck(value, limit) or self._event(value or b"")
            if isinstance(outcome, dict):
                out.events.append(outcome)
                out.positions.append(i)
            else:
                out.rejected.append((i, outcome))
        return out

    def _event(self, value: bytes) -> dict[str, Any] | Rejection:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return INVALID_UTF8
        try:
            cells = next(csv.reader(_lines(text)))
        except (csv.Error, StopIteration) as exc:
            return Rejection(RejectKind.DECODE, f"not a CSV row: {exc}")
        if len(cells) > len(self.header):
            message = f"CSV row has {len(cells)} cells but the header has {len(self.header)}"
            return Rejection(RejectKind.DECODE, message)
        event: dict[str, Any] = {}
        kinds = self.kinds
        for name, cell in zip(self.header, cells, strict=False):
            if cell != "":
                kind = "string" if name == "id" else kinds.get(name)
                event[name] = cell_value(cell) if kind is None else _typed(cell, kind)
        return event


def _lines(text: str) -> list[str]:
    # Split as iterating a file does (on "\n" only, ends kept), so a record reads here
    # exactly as it read from the file.
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _typed(cell: str, kind: str) -> Any:
    if kind == "boolean":
        return _BOOLEANS.get(cell.strip().lower(), cell)
    return cell


_BOOLEANS: Final = {"true": True, "false": False}


def cell_value(cell: str) -> Any:
    """Numbers for numeric-looking cells; everything else stays text."""
    text = cell.strip()
    if _INT_RE.match(text):
        whole = int(text)
        if _MIN_INT <= whole <= _MAX_INT:
            return whole
    elif not _FLOAT_RE.match(text):
        return cell
    # Ints beyond 64 bits become floats, as JSON readers would make them; a
    # value overflowing to inf stays text (a JSON writer would write inf as null).
    number = float(text)
    return number if math.isfinite(number) else cell
