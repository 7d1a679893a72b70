"""The promotion policy: when a retrained candidate replaces the champion.

Declared in the retrain TOML file (``[policy]``); both models' figures come from the
same holdout and the monitor's own figure code. Pure: figures in, a decision out.

```toml
[policy]
min_rows = 2000          # labeled holdout rows, at least
min_positives = 50       # positives among them, at least
threshold = "precision"  # how the candidate's threshold is chosen: precision,
threshold_target = 0.4   # alert_rate (with its target), f1 or keep

[[policy.require]]       # candidate roc_auc >= champion's + 0.005
metric = "roc_auc"
margin = 0.005
[[policy.require]]       # candidate recall >= champion's
metric = "recall"
margin = 0.0
```

Without ``[[policy.require]]`` tables the two above apply. For metrics where lower is
better (log_loss, brier, psi) the candidate must be lower by ``margin``; a negative
margin tolerates that much of a worsening.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from worker.monitor.figures import Figure
from worker.retrain.threshold import TARGET_KINDS, TargetKind, ThresholdTarget

HIGHER_IS_BETTER: Final = frozenset({"roc_auc", "recall", "precision", "accuracy", "f1"})
LOWER_IS_BETTER: Final = frozenset({"log_loss", "brier", "psi"})
_KEYS: Final = frozenset({"min_rows", "min_positives", "threshold", "threshold_target",
                          "require"})


class PolicyError(ValueError):
    """The policy table is invalid; the message is one short line."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """The candidate's ``metric`` must beat the champion's by at least ``margin``."""

    metric: str
    margin: float = 0.0

    def check(self, champion: Mapping[str, Figure], candidate: Mapping[str, Figure]) -> Check:
        name, theirs, ours = self.metric, champion.get(self.metric), candidate.get(self.metric)
        if ours is None or theirs is None:
            who = "candidate" if ours is None else "champion"
            return Check(name, False, f"{name}: undefined for the {who}")
        higher = name in HIGHER_IS_BETTER
        need = theirs + self.margin if higher else theirs - self.margin
        ok = ours >= need if higher else ours <= need
        op = (">=" if ok else "<") if higher else ("<=" if ok else ">")
        sign = ("+" if higher else "-") if self.margin >= 0 else ("-" if higher else "+")
        return Check(name, ok, f"{name} {ours:.4f} {op} champion {theirs:.4f} {sign} "
                               f"{abs(self.margin):g}")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "detail": self.detail}


DEFAULT_REQUIREMENTS: Final = (Requirement("roc_auc", 0.005), Requirement("recall", 0.0))


@dataclass(frozen=True, slots=True)
class Policy:
    min_rows: int = 2000
    min_positives: int = 50
    requirements: tuple[Requirement, ...] = DEFAULT_REQUIREMENTS
    threshold: ThresholdTarget = field(default_factory=ThresholdTarget)

    def to_dict(self) -> dict[str, Any]:
        return {"min_rows": self.min_rows, "min_positives": self.min_positives,
                "threshold": self.threshold.kind, "threshold_target": self.threshold.value,
                "require": [{"metric": r.metric, "margin": r.margin}
                            for r in self.requirements]}


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    checks: tuple[Check, ...]

    @property
    def reasons(self) -> list[str]:
        """Why not (the failed checks); empty when promoted."""
        return [c.detail for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.promote:
            return "promote: " + "; ".join(c.detail for c in self.checks)
        return "keep the champion: " + "; ".join(self.reasons)


def decide(
    policy: Policy,
    champion: Mapping[str, Figure],
    candidate: Mapping[str, Figure],
    threshold_met: bool,
) -> Decision:
    """Promote when every check passes; each check says what it compared."""
    rows, positives = int(candidate.get("count") or 0), int(candidate.get("positives") or 0)
    checks = [
        Check("rows", rows >= policy.min_rows,
              f"{rows} labeled holdout rows {'>=' if rows >= policy.min_rows else '<'} "
              f"{policy.min_rows}"),
        Check("positives", positives >= policy.min_positives,
              f"{positives} holdout positives "
              f"{'>=' if positives >= policy.min_positives else '<'} {policy.min_positives}"),
        Check("threshold", threshold_met,
              f"threshold target {policy.threshold.describe()} "
              f"{'met' if threshold_met else 'not met'} on the holdout"),
    ]
    checks += [r.check(champion, candidate) for r in policy.requirements]
    return Decision(all(c.passed for c in checks), tuple(checks))


def parse_policy(table: object) -> Policy:
    """The ``[policy]`` table (None: the defaults); PolicyError naming the problem."""
    if table is None:
        return Policy()
    if not isinstance(table, dict):
        raise PolicyError("[policy] must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise PolicyError(f"[policy]: unknown keys {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_KEYS))})")
    default = Policy()
    requirements = table.get("require")
    return Policy(
        min_rows=_count(table, "min_rows", default.min_rows),
        min_positives=_count(table, "min_positives", default.min_positives),
        requirements=default.requirements if requirements is None else _requires(requirements),
        threshold=_target(table.get("threshold", "keep"), table.get("threshold_target")),
    )


def _count(table: Mapping[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if type(value) is not int or value < 0:
        raise PolicyError(f"[policy] {key} must be a whole number >= 0, got {value!r}")
    return value


def _requires(items: object) -> tuple[Requirement, ...]:
    if not isinstance(items, list) or not items:
        raise PolicyError("[[policy.require]] must be a list of tables with metric and margin")
    known = sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER)
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) - {"metric", "margin"}:
            raise PolicyError("each [[policy.require]] has only metric and margin")
        metric, margin = item.get("metric"), item.get("margin", 0.0)
        if metric not in known:
            raise PolicyError(f"[[policy.require]] metric {metric!r} is not one of "
                              f"{', '.join(known)}")
        if type(margin) not in (int, float) or not math.isfinite(margin):
            raise PolicyError(f"[[policy.require]] margin must be a number, got {margin!r}")
        out.append(Requirement(cast(str, metric), float(margin)))
    return tuple(out)


def _target(kind: object, value: object) -> ThresholdTarget:
    if kind not in TARGET_KINDS:
        raise PolicyError(f"[policy] threshold must be one of {', '.join(TARGET_KINDS)}, "
                          f"got {kind!r}")
    if kind in ("precision", "alert_rate"):
        if type(value) not in (int, float) or not 0.0 < cast(float, value) <= 1.0:
            raise PolicyError(f"[policy] threshold = {kind!r} needs threshold_target in "
                              f"(0, 1], got {value!r}")
        return ThresholdTarget(cast(TargetKind, kind), float(cast(float, value)))
    if value is not None:
        raise PolicyError(f"[policy] threshold = {kind!r} takes no threshold_target")
    return ThresholdTarget(kind)
