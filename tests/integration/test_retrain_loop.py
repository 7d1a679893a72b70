"""The whole loop on the real broker, as ``scoring-worker demo --drift`` runs it: drifted
demo traffic with labels, the monitor's recall alert, ``retrain --promote-if-better`` over
the post-drift range, the policy's promotion through the store and the control topic,
two workers swapping at a batch boundary without losing an event, and the monitor's
windows of the new version with the recall the old one lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator

from tests.integration.helpers import ROOT
from worker.devtools.demo_loop import LoopPlan, run_loop
from worker.devtools.loop_story import story


def test_drift_alert_retrain_promote_and_recover(
    kafka_bootstrap: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    plan = LoopPlan(rate=2000, healthy=20_000, train_drifted=24_000, after=12_000,
                    window="5s", timeout_s=300)
    r = run_loop(kafka_bootstrap, tmp_path, plan, cleanup=True)
    print(story(r))
    assert r.exits == {"worker-0": 0, "worker-1": 0, "monitor": 0}, r.exits
    assert r.retrain_exit == 0, r.retrain_output
    # Detect: the recall alert fired for v1 after the drift began.
    recall_alert = next(a for a in r.alerts if a["alert"] == "recall_low")
    assert recall_alert["model_version"] == "1" and recall_alert["at"] >= (r.drift_started_ms or 0)
    # Compare and promote: on the post-drift holdout the candidate beats the champion.
    d = r.decision
    schema = orjson.loads((ROOT / "schemas/model_decision.schema.json").read_bytes())
    Draft202012Validator(schema).validate(d)
    assert d["action"] == "promoted" and d["policy_passed"] and d["model_version"] == "2"
    assert d["candidate"]["recall"] > d["champion"]["recall"] + 0.1
    assert d["range_start"] >= (r.drift_started_ms or 0)
    # Promoted as `models promote --control-topic` does: v1 was current with sequence 1.
    assert d["sequence"] == 2
    # The swap: every partition switches once, at one point; nothing lost.
    assert r.lost == 0 and r.predictions >= r.events - r.malformed
    assert r.versions_by_partition == {p: ["1", "2"] for p in range(4)}
    # Verify: after the promotion, the monitor's windows of v2 have the recall v1 lost.
    assert r.recall_before is not None and r.recall_after_drift is not None
    assert r.recall_after_promotion is not None
    # The demo model's live recall is about 0.33 on healthy traffic and about 0.01 on
    # drifted traffic; the candidate, at a 2 % alert rate, catches about 0.3 of the drifted
    # fraud (several standard deviations apart at these counts).
    assert r.recall_before > 0.2 and r.recall_after_drift < 0.1 < r.recall_after_promotion
    assert r.recall_after_promotion > r.recall_after_drift + 0.1
    rolling_v2 = r.rolling["2"]
    assert rolling_v2["count"] >= 5_000 and rolling_v2["recall"] > r.recall_after_drift + 0.1
    report(f"retrain loop: recall before the drift {r.recall_before:.3f}, after it "
           f"{r.recall_after_drift:.3f}, after the promotion {r.recall_after_promotion:.3f}; "
           f"holdout recall champion {d['champion']['recall']:.3f} vs candidate "
           f"{d['candidate']['recall']:.3f}; {r.events:,} events, lost {r.lost}, "
           f"duplicates {r.duplicates}")
