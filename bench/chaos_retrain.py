"""The retrain fault of a chaos run (bench/chaos.py, issue 26): midway, the operator's real
``scoring-worker retrain --promote-if-better`` against the run's own broker.

It reads the run's labeled traffic as retrain reads any: the events of the workers' input
topic in a time range (from the traffic's start, at most ``RANGE_S`` s, up to the label delay
and ``LABEL_MARGIN_S`` s before now, so that every event has its label) joined by id with the
labels topic; fits a fresh clone of the serving model (the store's current version: the
champion) on the older rows, compares both on the newest ones, adds the candidate to the
workers' model store as version ``FIRST_VERSION`` (then 4, 5... for later retrain faults;
the model fault owns version 2) and applies the default promotion policy
(docs/lifecycle/retrain.md): promoted, the store's pointer moves and the control topic
tells every worker to swap; kept, the champion serves on. Either way the decision record
goes to the run's alerts topic. Whether it is promoted is the policy's call.

What the fault's record then says (``retrain``): the command's seconds and exit status,
the range, the champion and candidate versions, the decision (``promoted``, ``kept``, or
``failed`` with the command's last lines) with the policy's line as printed (why), the
data line (events read, labeled, train/holdout), the version the store serves after it;
the outputs per ``model_version`` produced from the previous fault's end to the launch
(``outputs_before``), while the command ran (``outputs_during``) and from its exit to the
next fault (``outputs_after``); and, when promoted, how many output partitions carried the
candidate and the seconds from the launch until all of them did (``candidate_seen_s``;
compare ``cmd_s``: the promotion is the command's last step).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos_models import Models, per_version, seen_per_partition
from chaos_parts import ROOT, now_ms

from worker.model.store import read_pointer_state

RETRAIN_FAULT = "retrain"
#: The range's end is this long before now, besides the label delay: labels are late.
LABEL_MARGIN_S = 3.0
#: The longest range read (an hour's run at 500 events/s would be 1.8 M events).
RANGE_S = 600.0
#: The first retrain candidate's version; the model fault adds version 2 when it comes.
FIRST_VERSION = 3
#: The report's data lines: "events 15,901 read; ..." and "labeled 15,900 (coverage ...".
DATA_LINE = re.compile(r"(events|labeled) [\d,]+ [(r]")


@dataclass
class Retrain:
    """The run's topics and model store, and how many retrain faults were done."""

    models: Models
    input_topic: str
    labels_topic: str
    alerts_topic: str
    label_delay: float
    done: int = 0
    #: How the inputs are read (``--registry``: Avro through the run's registry).
    input_args: list[str] = field(default_factory=list)

    def command(self, version: str, start_ms: int, end_ms: int) -> list[str]:
        m = self.models
        return [sys.executable, "-m", "worker", "retrain", "--bootstrap", m.bootstrap,
                "--model", str(m.store / m.name), "--input-topic", self.input_topic,
                "--labels-topic", self.labels_topic, "--control-topic", m.control_topic,
                "--alerts-topic", self.alerts_topic, "--from", str(start_ms), "--to",
                str(end_ms), "--candidate-version", version, "--promote-if-better",
                *self.input_args]

    def run(self, traffic_start_ms: int, since_ms: int) -> dict[str, Any]:
        """The fault: retrain on the traffic so far, and let the policy decide."""
        version = str(FIRST_VERSION + self.done)
        self.done += 1
        launched = now_ms()
        end = launched - int((self.label_delay + LABEL_MARGIN_S) * 1000)
        start = max(traffic_start_ms, end - int(RANGE_S * 1000))
        done = subprocess.run(self.command(version, start, end), capture_output=True,
                              text=True, cwd=ROOT, timeout=900)
        cmd_s = round((now_ms() - launched) / 1000, 1)
        serving = read_pointer_state(self.models.store / self.models.name)
        return {"version": version, "launched_ms": launched, "since_ms": since_ms,
                "range_ms": [start, end], "cmd_s": cmd_s, "exit_code": done.returncode,
                **parse_report(done.stdout, done.stderr, done.returncode),
                "serving_after": serving.version, "sequence_after": serving.sequence}


def parse_report(stdout: str, stderr: str, code: int) -> dict[str, Any]:
    """The decision as the command printed it (worker/retrain/command.py ``report``)."""
    lines = stdout.splitlines()

    def line(prefix: str) -> str | None:
        return next((x.strip() for x in lines if x.strip().startswith(prefix)), None)

    action = line("action:") or ""
    decision = ("promoted" if action.startswith("action: promoted")
                else "kept" if action.startswith("action: kept") else "failed")
    head = line("retrain ") or ""
    champion = head.split(" champion ", 1)[1].split(" vs ", 1)[0] if " champion " in head else None
    out: dict[str, Any] = {"decision": decision, "champion": champion,
                           "policy": line("policy:"), "action": action or None,
                           "data": [x.strip() for x in lines if DATA_LINE.match(x.strip())]}
    if code != 0 or decision == "failed":
        out["output_tail"] = (stdout + stderr).splitlines()[-8:]
    return out


def retrain_account(record: dict[str, Any], counts: Counter[tuple[int, str, int]],
                    end_ms: int, until_ms: int, partitions: int) -> dict[str, Any]:
    """The fault's record with the outputs per model_version before, during and after the
    command (``end_ms``: when it exited; ``until_ms``: the next fault or the end)."""
    launched, v = record["launched_ms"], record["version"]
    out = {**record,
           "outputs_before": per_version(counts, record["since_ms"], launched),
           "outputs_during": per_version(counts, launched, end_ms),
           "outputs_after": per_version(counts, end_ms, until_ms)}
    if record["decision"] == "promoted":
        firsts = seen_per_partition(counts, v, launched, until_ms, last=False)
        out["candidate_seen_partitions"] = len(firsts)
        out["candidate_seen_s"] = (round((max(firsts.values()) - launched) / 1000, 1)
                                   if len(firsts) == partitions else None)
    return out
