"""JSON objects (one per message value), decoded with orjson: the stream's format."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from worker.core.decoders import (
    EMPTY_VALUE,
    INVALID_UTF8,
    NOT_AN_OBJECT,
    Decoded,
    precheck,
    register,
)
from worker.errors import Rejection, RejectKind


class JsonDecoder:
    def decode(self, values: Sequence[bytes | None], limit: int) -> Decoded:
        out = Decoded()
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        events, positions, rejected = out.events, out.positions, out.rejected
        for i, value in enumerate(values):
            if value is None or not value or len(value) > limit:  # inline: the hot path
                rejected.append((i, precheck(value, limit) or EMPTY_VALUE))
                continue
            try:
                event = loads(value)
            except decode_error as exc:
                rejected.append((i, decode_rejection(exc)))
                continue
            if type(event) is dict:
                events.append(event)
                positions.append(i)
            else:
                rejected.append((i, NOT_AN_OBJECT))
        return out


def decode_rejection(exc: orjson.JSONDecodeError) -> Rejection:
    # orjson words every UTF-8 problem as "str is not valid UTF-8: surrogates ...".
    if "UTF-8" in exc.msg and "BOM" not in exc.msg:
        return INVALID_UTF8
    return Rejection(RejectKind.DECODE, f"invalid JSON: {exc}")


register("json", JsonDecoder)
