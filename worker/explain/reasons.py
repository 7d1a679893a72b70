"""Contributions -> the ``reasons`` of prediction records: the top K features by the size
of their contribution (ties: the manifest's order), each with the event's own value, and
the baseline the contributions add up from (schemas/prediction.schema.json)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from worker.explain import Contributions, Output


def reasons(contrib: Contributions, events: Sequence[Mapping[str, Any]],
            features: Sequence[str], k: int, output: Output) -> list[dict[str, Any]]:
    """One ``reasons`` object per row of ``contrib`` (``events[i]`` is row i's event)."""
    values = contrib.values
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :min(k, values.shape[1])]
    picked: list[list[float]] = np.take_along_axis(values, order, axis=1).tolist()
    baselines: list[float] = contrib.baseline.tolist()
    name = str(output)
    return [{"baseline": base, "output": name,
             "top": [{"feature": (f := features[c]), "value": event.get(f), "contribution": a}
                     for c, a in zip(columns, amounts, strict=True)]}
            for event, columns, amounts, base in zip(events, order.tolist(), picked, baselines,
                                                     strict=True)]
