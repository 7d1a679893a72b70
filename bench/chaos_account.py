"""The account of a chaos run (bench/chaos.py, issue 26): each fault's record and figures,
and the run's totals, from what the run's readers saw.

A fault's figures, each counted from the fault's end (the restart launched, the broker
answering again): ``resumed_s``, until every output partition had an output produced after
it; ``inputs_resumed_s``, the same for every input partition those outputs answer (the
workers' ``--lineage`` field: a stalled worker shows there while the others keep every
output partition fed); ``ready_s``, until every worker's /readyz said 200; and
``unready_s``, how long /readyz was not 200 in all from the fault's start to the next
fault's (a second dip counts too).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from chaos_models import fault_account, per_version
from chaos_parts import Outputs, Traffic
from chaos_retrain import retrain_account

#: The workers' readiness over the run: (wall ms, every running worker said 200).
ReadyLog = list[tuple[int, bool]]


@dataclass
class Fault:
    kind: str
    at_s: float  # since the traffic started
    start_ms: int
    end_ms: int  # when the fault was over (a restart launched, the broker answering again)
    resumed_s: float | None = None
    inputs_resumed_s: float | None = None
    ready_s: float | None = None
    #: Seconds /readyz was not 200 from the fault's start to the next fault's (or the end
    #: of traffic): a second dip after the first 200 counts too.
    unready_s: float | None = None
    models: dict[str, Any] | None = None  # the model fault's commands and outputs by version
    retrain: dict[str, Any] | None = None  # the retrain fault's command, decision, outputs
    registry: dict[str, Any] | None = None  # the registry fault's schema version and pause


def unready_between(log: ReadyLog, start_ms: int, end_ms: int) -> float:
    within = [(t, ok) for t, ok in list(log) if start_ms <= t <= end_ms]
    return round(sum(b[0] - a[0] for a, b in itertools.pairwise(within) if not a[1]) / 1000, 1)


def ready_after(log: ReadyLog, since_ms: int) -> float | None:
    at = next((t for t, ok in list(log) if t >= since_ms and ok), None)
    return None if at is None else (at - since_ms) / 1000


def settle(faults: Sequence[Fault], ready: ReadyLog, outputs: Outputs,
           traffic_end_ms: int) -> None:
    """Each fault's figures, once the outputs have caught up (in place)."""
    ends = [f.start_ms for f in faults[1:]] + [traffic_end_ms]
    for f, until in zip(faults, ends, strict=True):
        f.resumed_s = outputs.resumed_after(f.end_ms)
        f.inputs_resumed_s = outputs.resumed_after(f.end_ms, by_input=True)
        f.ready_s = ready_after(ready, f.end_ms)
        f.unready_s = unready_between(ready, f.start_ms, until)
        if f.models is not None:
            f.models = fault_account(f.models, outputs.by_version(), f.start_ms, until, 4)
        if f.retrain is not None:
            f.retrain = retrain_account(f.retrain, outputs.by_version(), f.end_ms, until, 4)


def totals(args: argparse.Namespace, traffic: Traffic, outputs: Outputs,
           faults: Sequence[Fault], traffic_s: float, procs: dict[str, Any]) -> dict[str, Any]:
    """The run's account: every input id against the outputs and dead letters (lost;
    duplicated, through a read_committed reader in exactly-once mode), the faults, and the
    processes' exits, peaks and leftovers (``procs``)."""
    sent, seen = set(traffic.sent), outputs.seen()
    lost = len(sent - set(seen))
    dup = sum(n - 1 for k, n in seen.items() if k in sent and n > 1)
    return {"guarantee": args.guarantee, "seed": args.seed, "seconds": traffic_s,
            "rate": args.rate, "sent": len(traffic.sent), "lost": lost, "duplicated": dup,
            "unknown_outputs": sum(n for k, n in seen.items() if k not in sent),
            "traffic_failures": traffic.failed[:5], "faults": [asdict(f) for f in faults],
            "outputs_per_model_version": per_version(outputs.by_version()),
            **procs}
