"""Typed columns -> a pandas DataFrame, for estimators fitted on data frames.

pandas is imported here only, and only when a bundle's runtime asks for a frame, so
a worker serving float-matrix models never loads it. Columns keep the manifest's
order and names, which is what a fitted estimator's ``feature_names_in_`` checks.
"""

from __future__ import annotations

from typing import Any

from worker.core.columns import Columns


def as_frame(data: Any) -> Any:
    """``data`` as a DataFrame: typed columns (anything with ``arrays``) become one, a
    frame stays as it is (a routed frame model's input, worker/model/runtimes/routed.py)."""
    return to_frame(data) if hasattr(data, "arrays") else data


def to_frame(columns: Columns) -> Any:
    import pandas as pd

    data = {f.name: array for f, array in zip(columns.features, columns.arrays, strict=True)}
    return pd.DataFrame(data, copy=False)
