"""The records the monitor publishes, and their Kafka keys.

Shapes are fixed by ``schemas/model_metrics.schema.json`` and
``schemas/model_alert.schema.json``: every figure is always present, JSON null
where undefined, so consumers never have to guess whether a field was dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from worker.monitor.alerts import AlertRecord
from worker.monitor.catalog import CATALOG
from worker.monitor.figures import Figure
from worker.monitor.windows import WindowKey


def metrics_key(window: WindowKey) -> str:
    """``model|version|window|start`` (``model|version|rolling`` for the rolling view),
    so that a compacted topic keeps the latest figures of each window."""
    return window.kafka_key()


def metrics_record(
    window: WindowKey,
    task: str,
    figures: Mapping[str, Figure],
    computed_at: int,
    *,
    unmatched_labels: int | None = None,
    sources: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The model-metrics record of one window; ``figures`` as returned by ``metrics``,
    ``details`` by ``estimate.window_details`` (its reliability and maturity tables)."""
    record: dict[str, Any] = {
        "model": window.model,
        "model_version": window.model_version,
        "window": window.window,
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        "task": task or None,
        "computed_at": computed_at,
    }
    if window.segment:
        seg_field, _, seg_value = window.segment.partition("=")
        record["segment"] = {"field": seg_field, "value": seg_value}
    for m in CATALOG:
        value = figures.get(m.name)
        record[m.name] = int(value or 0) if m.count else _json_number(value)
    record["unmatched_labels"] = unmatched_labels
    record["sources"] = sources
    record["reliability"] = list((details or {}).get("reliability", ()))
    record["maturity"] = list((details or {}).get("maturity", ()))
    return record


def alert_record(alert: AlertRecord) -> dict[str, Any]:
    rule, window = alert.rule, alert.window
    segment = {}
    if window.segment:
        field, _, value = window.segment.partition("=")
        segment = {"segment": {"field": field, "value": value}}
    return {
        "alert": rule.name,
        **segment,
        "status": alert.status,
        "model": window.model,
        "model_version": window.model_version,
        "metric": rule.metric,
        "op": rule.op,
        "threshold": rule.threshold,
        "value": alert.value,
        "basis": rule.basis,
        "basis_count": alert.basis_count,
        "min_count": rule.min_count,
        "min_coverage": rule.min_coverage,
        "window": window.window,
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        "at": alert.at,
        "firing_since": alert.since,
        **({"reason": alert.reason} if alert.reason else {}),
    }


def alert_key(alert: AlertRecord) -> str:
    """``rule|model|version``: a compacted topic keeps each alert's latest state."""
    return alert.key()


def _json_number(value: Figure) -> int | float | None:
    # JSON has no NaN or infinity (orjson would silently write null anyway).
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value
