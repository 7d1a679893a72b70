"""A bundle's self-test: its sample events scored by the very decode, feature and model
code of the stream, compared with the scores the estimator gave them when the bundle
was written (worker/model/sample.py).

Pure: the bundle is already loaded; nothing here reads a file or a clock. A bundle
that fails is refused by whoever loaded it, with this module's one line.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import orjson

from worker.core.pipeline import ScoringContext
from worker.core.scoring import score_batch_safely, score_matrix
from worker.errors import Rejection
from worker.model.bundle import ModelBundle

_SMOKE_ROWS: Final = 4


class SelfTestError(ValueError):
    """The bundle does not score its own sample as recorded; the message is one line."""


def self_test(bundle: ModelBundle) -> float | None:
    """The largest difference between the sample's scores here and as recorded, or None
    when the bundle has no sample (older bundles). Raises SelfTestError."""
    sample = bundle.manifest.self_test
    if sample is None:
        return None
    ctx = ScoringContext(bundle)
    ids = [str(e["id"]) for e in sample.events]
    decoded = ctx.decoder.decode([orjson.dumps(e) for e in sample.events], ctx.max_event_bytes)
    _no_rejections(ids, decoded.rejected)
    batch = ctx.extract(decoded.events, False)
    _no_rejections(ids, [(decoded.positions[j], r) for j, r in batch.rejected])
    result, _, rejected = score_batch_safely(bundle, batch.matrix)
    _no_rejections(ids, [(decoded.positions[batch.valid[row]], r) for row, r in rejected])
    expected = np.asarray(sample.outputs, dtype=np.float64)
    got = result.output
    if got.shape != expected.shape:
        raise SelfTestError(f"self-test: outputs of shape {got.shape}, the bundle recorded "
                            f"{expected.shape}")
    diff = np.abs(got - expected)
    worst = float(diff.max()) if diff.size else 0.0
    tolerance = bundle.runtime.tolerance
    if worst > tolerance:
        row = int(np.unravel_index(int(diff.argmax()), diff.shape)[0])
        raise SelfTestError(
            f"self-test: event {ids[row]!r} scored {_shown(got[row])} where the bundle "
            f"recorded {_shown(expected[row])} (difference {worst:.3g} > {tolerance:g})"
        )
    return worst


def smoke_test(bundle: ModelBundle) -> None:
    """For bundles without a sample that take a float matrix: zeros and ones must score
    with finite outputs of the right shape."""
    if bundle.runtime.input != "float64":
        return
    width = len(bundle.features)
    rows = np.vstack([np.zeros((_SMOKE_ROWS, width)), np.ones((_SMOKE_ROWS, width))])
    try:
        output = score_matrix(bundle, rows).output
    except Exception as exc:  # any estimator error refuses the bundle
        raise SelfTestError(f"smoke batch failed: {type(exc).__name__}: {exc}") from None
    if not np.isfinite(output).all():
        raise SelfTestError("smoke batch returned non-finite outputs")


def _no_rejections(ids: list[str], rejected: list[tuple[int, Rejection]]) -> None:
    if rejected:
        i, r = rejected[0]
        raise SelfTestError(f"self-test: event {ids[i]!r} was rejected ({r.kind.value}: "
                            f"{r.message})")


def _shown(row: np.ndarray) -> str:  # type: ignore[type-arg]
    return np.array2string(np.atleast_1d(row), precision=6, threshold=6)
