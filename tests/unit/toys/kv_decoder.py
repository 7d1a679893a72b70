"""A toy input format, added the way a real one would be: one module, one register call.

``id=e1;a=0.5;b=-1`` -> {"id": "e1", "a": 0.5, "b": -1.0}.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.core.decoders import Decoded, precheck, register
from worker.errors import Rejection, RejectKind


class KvDecoder:
    def decode(self, values: Sequence[bytes | None], limit: int) -> Decoded:
        out = Decoded()
        for i, value in enumerate(values):
            problem = precheck(value, limit)
            pairs = [p.partition("=") for p in (value or b"").decode().split(";")]
            if problem is None and not all(sep for _, sep, _ in pairs):
                problem = Rejection(RejectKind.DECODE, "expected key=value pairs")
            if problem is not None:
                out.rejected.append((i, problem))
                continue
            out.events.append({k: v if k == "id" else float(v) for k, _, v in pairs})
            out.positions.append(i)
        return out


register("kv", KvDecoder)
