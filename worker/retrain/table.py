"""The side-by-side table of champion and candidate on the same holdout. Pure: text out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from worker.monitor.figures import Figure
from worker.retrain.evaluate import TABLE_FIGURES

LABELS: Final = {
    "count": "labeled rows",
    "positives": "positives",
    "roc_auc": "ROC AUC",
    "recall": "recall @ threshold",
    "precision": "precision @ threshold",
    "alert_rate": "alert rate @ threshold",
    "log_loss": "log loss",
    "brier": "Brier score",
    "psi": "PSI vs training scores",
    "threshold": "threshold",
}


def _cell(value: Figure) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}"


def _diff(a: Figure, b: Figure) -> str:
    if a is None or b is None:
        return "-"
    d = b - a
    if isinstance(a, int) and isinstance(b, int):
        return f"{d:+,}"
    return f"{d:+.4f}"


def comparison_table(
    champion_version: str,
    candidate_version: str,
    champion: Mapping[str, Figure],
    candidate: Mapping[str, Figure],
    thresholds: tuple[float, float],
) -> str:
    """One row per figure: champion, candidate, candidate minus champion.

    PSI is each model's holdout scores against its own reference histogram (the
    champion's from its bundle, the candidate's from its training scores)."""
    rows = [(LABELS[name], champion.get(name), candidate.get(name)) for name in TABLE_FIGURES]
    rows.append((LABELS["threshold"], thresholds[0], thresholds[1]))
    head = ("", f"champion v{champion_version}", f"candidate v{candidate_version}", "difference")
    body = [(label, _cell(a), _cell(b), _diff(a, b)) for label, a, b in rows]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(4)]
    lines = []
    for r in (head, *body):
        lines.append("  ".join([r[0].ljust(widths[0]),
                                *(r[i].rjust(widths[i]) for i in (1, 2, 3))]).rstrip())
    return "\n".join(lines)
