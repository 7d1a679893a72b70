"""Compact binary forms of the join state, and the blocks of the join topic.

A pending-table entry is one of three tuples (``Entry``), kept in the store and
in the changelog as a few dozen bytes of ``struct`` fields rather than a JSON
object:

- ``(WAITING, stored_at, preds)``: predictions waiting for their label, one per
  model version (``Pred``: model, version, score, decision, event time, segments);
- ``(LABEL, stored_at, value, label_time)``: a label waiting for its prediction;
- ``(JOINED, stored_at, value, label_time, versions)``: the marker of a joined
  id, kept for the dedup window so that retries are recognised.

A *block* carries one batch of predictions and labels for one join partition,
already checked and reduced to what the join needs, as columns (orjson lists).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from worker.monitor.views import LabelValue, Score

WAITING: Final = 0
LABEL: Final = 1
JOINED: Final = 2

Pred = tuple[str, str, Score, LabelValue, int, str]
"""model, version, score, decision, event time (the prediction's event_ts, else scored_at),
segments (``records.read_segments``'s canonical text; "" when none)."""
#: In a WAITING entry's count byte: each prediction is followed by its segments. Entries
#: without segments keep the format they had before segments existed.
_WITH_SEGMENTS: Final = 0x80
ModelKey = tuple[str, str]
Entry = tuple[Any, ...]

_HEAD: Final = struct.Struct("<Bq")
_Q: Final = struct.Struct("<q")
_D: Final = struct.Struct("<d")
_H: Final = struct.Struct("<H")
_INT64: Final = (-(2**63), 2**63 - 1)


def _str(s: str, out: list[bytes]) -> None:
    raw = s.encode()
    out.append(_H.pack(len(raw)))
    out.append(raw)


def _value(v: LabelValue | Score, out: list[bytes]) -> None:
    if type(v) is int and _INT64[0] <= v <= _INT64[1]:
        out.append(b"i" + _Q.pack(v))
    elif type(v) is float:
        out.append(b"f" + _D.pack(v))
    elif type(v) is str:
        out.append(b"s")
        _str(v, out)
    elif type(v) is int:  # beyond 64 bits: its digits
        out.append(b"n")
        _str(str(v), out)
    else:  # a dict score (multiclass)
        raw = orjson.dumps(v)
        out.append(b"j" + _H.pack(len(raw)) + raw)


_FAST_PRED: Final = struct.Struct("<cdcqq")  # float score, int decision, event time
_FAST_LABEL: Final = struct.Struct("<cqqH")  # int label, label time, one version
_MV: dict[ModelKey, bytes] = {}


def _model_key(model: str, version: str) -> bytes:
    """Encoded (model, version), cached: a handful of versions, millions of entries."""
    raw = _MV.get((model, version))
    if raw is None:
        parts: list[bytes] = []
        _str(model, parts)
        _str(version, parts)
        raw = b"".join(parts)
        if len(_MV) < 10_000:
            _MV[(model, version)] = raw
    return raw


def encode_entry(entry: Entry) -> bytes:
    tag, stored_at = entry[0], entry[1]
    head = _HEAD.pack(tag, stored_at)
    if tag == WAITING and len(entry[2]) == 1 and not entry[2][0][5]:
        model, version, score, decision, event_time, _ = entry[2][0]
        if type(score) is float and type(decision) is int and _INT64[0] <= decision <= _INT64[1]:
            return b"".join((head, b"\x01", _model_key(model, version),
                             _FAST_PRED.pack(b"f", score, b"i", decision, event_time)))
    elif tag == JOINED and len(entry[4]) == 1 and type(entry[2]) is int \
            and _INT64[0] <= entry[2] <= _INT64[1]:
        return b"".join((head, _FAST_LABEL.pack(b"i", entry[2], entry[3], 1),
                         _model_key(*entry[4][0])))
    out = [head]
    if tag == WAITING:
        preds: tuple[Pred, ...] = entry[2]
        segmented = any(p[5] for p in preds)
        out.append(bytes((len(preds) | (_WITH_SEGMENTS if segmented else 0),)))
        for model, version, score, decision, event_time, segments in preds:
            out.append(_model_key(model, version))
            _value(score, out)
            _value(decision, out)
            out.append(_Q.pack(event_time))
            if segmented:
                _str(segments, out)
    else:
        _value(entry[2], out)
        out.append(_Q.pack(entry[3]))
        if tag == JOINED:
            versions: tuple[ModelKey, ...] = entry[4]
            out.append(_H.pack(len(versions)))
            for model, version in versions:
                out.append(_model_key(model, version))
    return b"".join(out)


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def q(self) -> int:
        (v,) = _Q.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def h(self) -> int:
        (v,) = _H.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def s(self) -> str:
        n = self.h()
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos]).decode()

    def value(self) -> Any:
        kind = self.buf[self.pos]
        self.pos += 1
        if kind == 0x69:  # i
            return self.q()
        if kind == 0x66:  # f
            (v,) = _D.unpack_from(self.buf, self.pos)
            self.pos += 8
            return v
        if kind == 0x73:  # s
            return self.s()
        if kind == 0x6E:  # n
            return int(self.s())
        n = self.h()
        self.pos += n
        return orjson.loads(self.buf[self.pos - n : self.pos])


_KEYS: dict[bytes, tuple[ModelKey, int]] = {}


def _cached_key(raw: bytes, pos: int) -> tuple[ModelKey, int]:
    """The (model, version) at ``pos`` and where it ends, decoded once per distinct bytes."""
    (n1,) = _H.unpack_from(raw, pos)
    (n2,) = _H.unpack_from(raw, pos + 2 + n1)
    end = pos + 4 + n1 + n2
    span = raw[pos:end]
    hit = _KEYS.get(span)
    if hit is None:
        key = (raw[pos + 2 : pos + 2 + n1].decode(), raw[pos + 4 + n1 : end].decode())
        hit = (key, end - pos)
        if len(_KEYS) < 10_000:
            _KEYS[span] = hit
    return hit


def decode_entry(raw: bytes) -> Entry:
    tag, stored_at = _HEAD.unpack_from(raw, 0)
    if tag == WAITING and raw[9] == 1:
        (model, version), n = _cached_key(raw, 10)
        if len(raw) == 10 + n + _FAST_PRED.size and raw[10 + n] == 0x66 \
                and raw[19 + n] == 0x69:
            _f, score, _i, decision, event_time = _FAST_PRED.unpack_from(raw, 10 + n)
            return (WAITING, stored_at, ((model, version, score, decision, event_time, ""),))
    r = _Reader(raw)
    r.pos = _HEAD.size
    if tag == WAITING:
        n = raw[r.pos]
        r.pos += 1
        if n & _WITH_SEGMENTS:
            preds = tuple((r.s(), r.s(), r.value(), r.value(), r.q(), r.s())
                          for _ in range(n & ~_WITH_SEGMENTS))
        else:
            preds = tuple((r.s(), r.s(), r.value(), r.value(), r.q(), "") for _ in range(n))
        return (WAITING, stored_at, preds)
    value, label_time = r.value(), r.q()
    if tag == LABEL:
        return (LABEL, stored_at, value, label_time)
    if tag != JOINED:
        raise ValueError(f"unknown join entry tag {tag}")
    versions = tuple((r.s(), r.s()) for _ in range(r.h()))
    return (JOINED, stored_at, value, label_time, versions)


# -- blocks: one batch of one join partition -----------------------------------------
BLOCK_MAGIC: Final = b"\x01"


@dataclass(slots=True)
class Block:
    """Rows in arrival order. ``kinds``: "p" prediction, "l" label, "x" unreadable.

    Per row: ``ids`` (None for "x"), ``ts`` (the record's Kafka timestamp, the join's
    clock). Predictions: ``codes`` (index into ``versions``), ``scores``, ``values``
    (the decision), ``times`` (event time), ``truths`` (inline true label or None).
    Labels: ``values`` (the label), ``times`` (its own ``ts`` or None). ``segs``: a
    prediction's segments (canonical text, "" when none), "" for other rows. ``reasons``:
    a prediction's top reason (``records.read_top_reason``), "" for other rows.
    """

    kinds: list[str] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    scores: list[Score | None] = field(default_factory=list)
    values: list[LabelValue | None] = field(default_factory=list)
    times: list[int | None] = field(default_factory=list)
    truths: list[LabelValue | None] = field(default_factory=list)
    segs: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    versions: list[ModelKey] = field(default_factory=list)
    _codes: dict[ModelKey, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.kinds)

    def add_prediction(self, ident: str, ts: int, model: str, version: str, score: Score,
                       decision: LabelValue, event_time: int,
                       truth: LabelValue | None, segments: str = "",
                       top_reason: str = "") -> None:
        key = (model, version)
        code = self._codes.get(key)
        if code is None:
            code = self._codes[key] = len(self.versions)
            self.versions.append(key)
        self.kinds.append("p")
        self.ids.append(ident)
        self.ts.append(ts)
        self.codes.append(code)
        self.scores.append(score)
        self.values.append(decision)
        self.times.append(event_time)
        self.truths.append(truth)
        self.segs.append(segments)
        self.reasons.append(top_reason)

    def add_label(self, ident: str, ts: int, value: LabelValue, label_ts: int | None) -> None:
        self.kinds.append("l")
        self.ids.append(ident)
        self.ts.append(ts)
        self.codes.append(-1)
        self.scores.append(None)
        self.values.append(value)
        self.times.append(label_ts)
        self.truths.append(None)
        self.segs.append("")
        self.reasons.append("")

    def add_invalid(self, ts: int) -> None:
        self.kinds.append("x")
        self.ids.append(None)
        self.ts.append(ts)
        self.codes.append(-1)
        self.scores.append(None)
        self.values.append(None)
        self.times.append(None)
        self.truths.append(None)
        self.segs.append("")
        self.reasons.append("")

    @classmethod
    def concat(cls, blocks: list[Block]) -> Block:
        """One block of the rows of ``blocks``, in order."""
        if len(blocks) == 1:
            return blocks[0]
        out = cls()
        for b in blocks:
            remap = []
            for key in b.versions:
                code = out._codes.get(key)
                if code is None:
                    code = out._codes[key] = len(out.versions)
                    out.versions.append(key)
                remap.append(code)
            out.kinds += b.kinds
            out.ids += b.ids
            out.ts += b.ts
            out.codes += [remap[c] if c >= 0 else c for c in b.codes]
            out.scores += b.scores
            out.values += b.values
            out.times += b.times
            out.truths += b.truths
            out.segs += b.segs
            out.reasons += b.reasons
        return out

    def encode(self) -> bytes:
        return BLOCK_MAGIC + orjson.dumps({
            "k": "".join(self.kinds), "i": self.ids, "t": self.ts, "c": self.codes,
            "s": self.scores, "v": self.values, "e": self.times, "y": self.truths,
            "m": self.versions,
            # only when some row has segments: blocks without them are as before
            **({"g": self.segs} if any(self.segs) else {}),
            **({"r": self.reasons} if any(self.reasons) else {}),
        })


def decode_block(raw: bytes) -> Block:
    if raw[:1] != BLOCK_MAGIC:
        raise ValueError("not a join block (unknown format byte)")
    d = orjson.loads(raw[1:])
    n = len(d["k"])
    columns = (d["i"], d["t"], d["c"], d["s"], d["v"], d["e"], d["y"])
    if any(len(c) != n for c in columns):
        raise ValueError("join block columns differ in length")
    segs = d.get("g") or [""] * n
    if len(segs) != n:
        raise ValueError("join block columns differ in length")
    reasons = d.get("r") or [""] * n
    if len(reasons) != n:
        raise ValueError("join block columns differ in length")
    versions = [(str(m), str(v)) for m, v in d["m"]]
    return Block(list(d["k"]), *columns, segs, reasons, versions,
                 {k: i for i, k in enumerate(versions)})


def entry_versions(entry: Entry) -> Sequence[ModelKey]:
    if entry[0] == WAITING:
        return [(p[0], p[1]) for p in entry[2]]
    return entry[4] if entry[0] == JOINED else ()
