"""The decision record (schemas/model_decision.schema.json) a retrain run publishes on the
alerts topic: what was compared, on which data, what the policy said and what was done.
Pure: values in, the record's key and value out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from worker.core.records import escape_key_part
from worker.monitor.figures import Figure
from worker.retrain.policy import Decision, Policy

DECISION_ALERT: Final = "model_decision"
Action = Literal["promoted", "kept", "shadowed", "none"]


@dataclass(frozen=True, slots=True)
class Compared:
    """Both sides of a comparison on one holdout."""

    model: str
    champion_version: str
    candidate_version: str
    champion: Mapping[str, Figure]
    candidate: Mapping[str, Figure]
    thresholds: tuple[float, float]
    range_ms: tuple[int, int]
    holdout_ms: tuple[int | None, int]


def action_for(decision: Decision, promote_if_better: bool, shadow: bool) -> Action:
    """What a run does with its candidate: the policy decides under --promote-if-better;
    --shadow shadows it whatever the policy says (the live figures decide later)."""
    if shadow:
        return "shadowed"
    if promote_if_better:
        return "promoted" if decision.promote else "kept"
    return "none"


def decision_record(
    c: Compared, decision: Decision, policy: Policy, action: Action, at_ms: int,
    sequence: int | None = None,
) -> tuple[bytes, bytes]:
    """Key and value of the record; ``sequence``: that of the control instruction issued
    (promoted, shadowed), None when none was."""
    key = "|".join(escape_key_part(p) for p in (DECISION_ALERT, c.model, c.candidate_version))
    value = {
        "alert": DECISION_ALERT,
        "model": c.model,
        "model_version": c.candidate_version,
        "champion_version": c.champion_version,
        "action": action,
        "policy_passed": decision.promote,
        "reasons": decision.reasons,
        "checks": [check.to_dict() for check in decision.checks],
        "policy": policy.to_dict(),
        "champion": _figures(c.champion, c.thresholds[0]),
        "candidate": _figures(c.candidate, c.thresholds[1]),
        "range_start": c.range_ms[0],
        "range_end": c.range_ms[1],
        "holdout_start": c.holdout_ms[0],
        "holdout_end": c.holdout_ms[1],
        "sequence": sequence,
        "at": at_ms,
    }
    return key.encode(), orjson.dumps(value)


def _figures(figures: Mapping[str, Figure], threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {k: _json(v) for k, v in figures.items()}
    out["threshold"] = threshold
    return out


def _json(value: Figure) -> int | float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
