"""The model fault of a chaos run (bench/chaos.py, issue 26): the workers serve a model store
folder and follow a control topic; midway a second version is added to the store, promoted
through the control topic, and rolled back ``PROMOTED_S`` s later, with the operator's
commands (``scoring-worker models add/promote/rollback --control-topic``).

What the fault's record then says (``models``): when the promote and the rollback were
launched (wall ms) and how long each command took (``*_cmd_s``: it starts a Python, checks
the bundle, reads the control topic, moves the pointer, publishes); the outputs per
``model_version`` produced (their CreateTime) from the fault's start to the promote's
launch, from there to the rollback's launch, and from there to the next fault; and, from
each launch, the seconds until every output partition carried the promoted version
(``promote_seen_s``) and until the last output of it (``rollback_seen_s``). A worker moves
when it sees the store pointer or the control record, whichever comes first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos_parts import BUCKET_MS, ROOT, now_ms

from worker.devtools.demo import train_demo
from worker.model.store import ModelStore

#: How long the promoted version serves before the rollback.
PROMOTED_S = 10.0
MODEL_FAULT = "model-promote-rollback"


@dataclass
class Models:
    """The workers' model store, its two versions, and the control topic."""

    tmp: Path
    bootstrap: str
    control_topic: str
    name: str = ""
    bundles: list[Path] = field(default_factory=list)
    versions: list[str] = field(default_factory=lambda: ["1", "2"])

    @property
    def store(self) -> Path:
        return self.tmp / "models"

    def prepare(self) -> None:
        """Train both versions (the demo model, seeds 3 and 4) and add the first one to the
        store, as its current version; the second one is added by the fault."""
        self.bundles = [train_demo(self.tmp / "model" / f"fraud-{v}", seed=2 + int(v),
                                   n=20_000, version=v) for v in self.versions]
        store = ModelStore(self.store)
        added = store.add(self.bundles[0])
        store.promote(added.name, added.version)
        self.name = added.name

    def worker_args(self) -> list[str]:
        return ["--model", str(self.store / self.name), "--control-topic", self.control_topic]

    def monitor_models(self) -> str:
        return ",".join(str(b) for b in self.bundles)

    def _cli(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "worker", "models", *args, "--store", str(self.store)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"models {args[0]}: {done.stdout}{done.stderr}")

    def _timed(self, *args: str) -> tuple[int, float]:
        """Run a ``models`` command: when it was launched (wall ms), and its seconds."""
        start = now_ms()
        self._cli(*args)
        return start, round((now_ms() - start) / 1000, 1)

    def promote_rollback(self) -> dict[str, Any]:
        """The fault: add the second version (once), promote it through the control topic,
        roll back ``PROMOTED_S`` s after the promote returned; when each command was
        launched (wall ms) and how long it took."""
        control = ["--control-topic", self.control_topic, "--bootstrap", self.bootstrap]
        add_s = 0.0
        if not (self.store / self.name / self.versions[1]).is_dir():
            add_s = self._timed("add", str(self.bundles[1]))[1]
        promote_ms, promote_s = self._timed("promote", self.name, self.versions[1], *control)
        time.sleep(PROMOTED_S)
        rollback_ms, rollback_s = self._timed("rollback", self.name, *control)
        return {"version": self.versions[1], "add_s": add_s, "promote_ms": promote_ms,
                "promote_cmd_s": promote_s, "rollback_ms": rollback_ms,
                "rollback_cmd_s": rollback_s}


def short_order(kinds: list[str]) -> list[str]:
    """The kinds drawn from the seed, the model fault moved among the first four when it is
    later (a short run does about five faults)."""
    i = kinds.index(MODEL_FAULT)
    if i > 3:
        kinds[3], kinds[i] = kinds[i], kinds[3]
    return kinds


def per_version(counts: Counter[tuple[int, str, int]], lo_ms: int = 0,
                hi_ms: int = 2**62) -> dict[str, int]:
    """Outputs per model_version produced in [lo_ms, hi_ms) (to the bucket; all of them by
    default)."""
    out: Counter[str] = Counter()
    for (_, version, bucket), n in counts.items():
        if lo_ms <= bucket * BUCKET_MS < hi_ms:
            out[version] += n
    return dict(sorted(out.items()))


def seen_per_partition(counts: Counter[tuple[int, str, int]], version: str, lo_ms: int,
                       hi_ms: int, last: bool) -> dict[int, int]:
    """Per output partition, the first (``last``: the last) bucket start, in ms, of an output
    of ``version`` in [lo_ms, hi_ms)."""
    found: dict[int, int] = {}
    pick = max if last else min
    for (part, v, bucket), _ in counts.items():
        at = bucket * BUCKET_MS
        if v == version and lo_ms <= at < hi_ms:
            found[part] = pick(found.get(part, at), at)
    return found


def fault_account(record: dict[str, Any], counts: Counter[tuple[int, str, int]], start_ms: int,
            until_ms: int, partitions: int) -> dict[str, Any]:
    """The fault's record with the outputs per model_version in its three phases."""
    promote, rollback, v = record["promote_ms"], record["rollback_ms"], record["version"]
    firsts = seen_per_partition(counts, v, promote, rollback, last=False)
    lasts = seen_per_partition(counts, v, rollback, until_ms, last=True)
    return {**record,
            "outputs_before": per_version(counts, start_ms, promote),
            "outputs_promoted": per_version(counts, promote, rollback),
            "outputs_rolled_back": per_version(counts, rollback, until_ms),
            "promote_seen_partitions": len(firsts),
            "promote_seen_s": (round((max(firsts.values()) - promote) / 1000, 1)
                               if len(firsts) == partitions else None),
            "rollback_seen_s": (round((max(lasts.values()) + BUCKET_MS - rollback) / 1000, 1)
                                if lasts else 0.0)}
