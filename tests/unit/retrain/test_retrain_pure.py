"""The pure parts of retraining: threshold tuning, the policy, the join and the time split,
the table, the time range and the decision record. No broker, no files."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.unit.helpers import SCHEMAS
from worker.errors import ConfigError
from worker.retrain.dataset import join, label_table, time_split
from worker.retrain.decision import Compared, action_for, decision_record
from worker.retrain.policy import Policy, PolicyError, Requirement, decide, parse_policy
from worker.retrain.settings import parse_time, time_range
from worker.retrain.table import comparison_table
from worker.retrain.threshold import ThresholdTarget, choose_threshold


def brute(scores: np.ndarray, y: np.ndarray, t: float) -> tuple[float | None, float, float]:
    flagged = scores >= t
    hits = int((flagged & y).sum())
    precision = hits / flagged.sum() if flagged.sum() else None
    return precision, hits / y.sum(), float(flagged.mean())


@pytest.fixture
def holdout() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.random(5000) < 0.05
    # Rounded: many ties, as real scores have; informative but not perfectly.
    scores = np.round(1 / (1 + np.exp(-(rng.normal(0, 1, 5000) + 2.0 * y - 3))), 3)
    return scores, y


def test_precision_target_takes_the_lowest_threshold_that_reaches_it(holdout: Any) -> None:
    scores, y = holdout
    choice = choose_threshold(scores, y, ThresholdTarget("precision", 0.3), 0.5)
    assert choice.met and choice.precision is not None and choice.precision >= 0.3
    assert brute(scores, y, choice.threshold) == (choice.precision, choice.recall,
                                                  choice.alert_rate)
    # No lower threshold (any other score) reaches the target.
    for t in np.unique(scores[scores < choice.threshold]):
        p, _, _ = brute(scores, y, t)
        assert p is None or p < 0.3


def test_alert_rate_target_flags_at_most_that_share(holdout: Any) -> None:
    scores, y = holdout
    choice = choose_threshold(scores, y, ThresholdTarget("alert_rate", 0.02), 0.5)
    assert choice.met and choice.alert_rate <= 0.02
    below = np.unique(scores[scores < choice.threshold]).max()
    assert brute(scores, y, below)[2] > 0.02  # the next lower score would flag too many
    assert brute(scores, y, choice.threshold)[1] == choice.recall


def test_f1_keep_and_an_unreachable_precision(holdout: Any) -> None:
    scores, y = holdout
    best = choose_threshold(scores, y, ThresholdTarget("f1"), 0.5)
    f1 = [2 * ((scores >= t) & y).sum() / ((scores >= t).sum() + y.sum())
          for t in np.unique(scores)]
    assert best.recall is not None and best.precision is not None
    got = 2 * best.recall * best.precision / (best.recall + best.precision)
    assert got == pytest.approx(max(f1))
    kept = choose_threshold(scores, y, ThresholdTarget("keep"), 0.42)
    assert kept.threshold == 0.42 and kept.met
    impossible = choose_threshold([0.9, 0.8, 0.7], [False, True, True],
                                  ThresholdTarget("precision", 0.9), 0.5)
    assert not impossible.met and impossible.threshold == 0.7  # the most precise one
    top_ties = choose_threshold(np.full(10, 0.7), np.arange(10) < 3,
                                ThresholdTarget("alert_rate", 0.05), 0.5)
    assert top_ties.alert_rate == 0.0 and top_ties.threshold > 0.7
    assert choose_threshold([], [], ThresholdTarget("f1"), 0.3).threshold == 0.3


def test_policy_defaults_and_parsing() -> None:
    assert parse_policy(None) == Policy()
    p = parse_policy({"min_rows": 100, "threshold": "precision", "threshold_target": 0.4,
                      "require": [{"metric": "log_loss", "margin": -0.01}]})
    assert p.min_rows == 100 and p.threshold == ThresholdTarget("precision", 0.4)
    assert p.requirements == (Requirement("log_loss", -0.01),)
    for bad, match in (({"min_row": 1}, "unknown keys min_row"),
                       ({"min_rows": -1}, "min_rows"), ({"threshold": "best"}, "threshold"),
                       ({"threshold": "precision"}, "threshold_target"),
                       ({"threshold": "f1", "threshold_target": 0.2}, "takes no"),
                       ({"require": [{"metric": "speed"}]}, "speed"),
                       ({"require": [{"metric": "recall", "margin": "x"}]}, "margin"),
                       ("x", "table")):
        with pytest.raises(PolicyError, match=match):
            parse_policy(bad)


def figs(**kw: Any) -> dict[str, Any]:
    return {"count": 3000, "positives": 90, "roc_auc": 0.8, "recall": 0.3, "log_loss": 0.1,
            **kw}


def test_decide_promotes_only_when_every_check_passes() -> None:
    policy = Policy()
    ok = decide(policy, figs(roc_auc=0.7, recall=0.2), figs(), threshold_met=True)
    assert ok.promote and ok.reasons == []
    assert "roc_auc 0.8000 >= champion 0.7000 + 0.005" in ok.summary()
    close = decide(policy, figs(roc_auc=0.798), figs(), threshold_met=True)
    assert not close.promote
    assert close.reasons == ["roc_auc 0.8000 < champion 0.7980 + 0.005"]
    few = decide(policy, figs(roc_auc=0.5), figs(count=1999, positives=10), threshold_met=False)
    assert [r.split()[0] for r in few.reasons] == ["1999", "10", "threshold"]
    undefined = decide(policy, figs(roc_auc=0.5), figs(recall=None), threshold_met=True)
    assert undefined.reasons == ["recall: undefined for the candidate"]
    lower = Policy(requirements=(Requirement("log_loss", 0.01),))
    assert decide(lower, figs(log_loss=0.2), figs(log_loss=0.15), True).promote
    assert decide(lower, figs(log_loss=0.2), figs(log_loss=0.195), True).reasons == [
        "log_loss 0.1950 > champion 0.2000 - 0.01"]


def test_labels_join_by_id_first_label_wins_and_classes_match_like_the_monitor() -> None:
    labels = label_table([("a", 1), ("b", "0"), ("a", 0), ("c", 7), ("d", 1.0)])
    assert labels.read == 5 and labels.duplicates == 1 and labels.first["a"] == 1
    j = join(["a", "b", "a", "c", "d", "e"], [5, 6, 7, 8, 9, 10], labels, (0, 1))
    assert j.rows == [0, 1, 4] and j.y == [1, 0, 1] and j.times == [5, 6, 9]
    assert (j.duplicates, j.unlabeled, j.bad_labels) == (1, 1, 1)


def test_the_holdout_is_the_newest_rows_and_ties_stay_together() -> None:
    times = [50, 10, 40, 20, 30, 30, 30, 60, 70, 80]
    split = time_split(times, 0.3)
    assert sorted(times[k] for k in split.holdout) == [60, 70, 80] and split.cut_ms == 60
    tied = time_split(times, 0.6)  # the cut would fall inside the run of 30s: all go holdout
    assert sorted(times[k] for k in tied.holdout) == [30, 30, 30, 40, 50, 60, 70, 80]
    assert max(times[k] for k in tied.train) < min(times[k] for k in tied.holdout)
    assert time_split([], 0.3).holdout == []
    with pytest.raises(ValueError):
        time_split(times, 1.0)


def test_table_shows_both_models_and_the_difference() -> None:
    text = comparison_table("1", "2", figs(roc_auc=0.5, psi=None), figs(psi=0.01), (0.2, 0.3))
    lines = text.splitlines()
    assert lines[0].split() == ["champion", "v1", "candidate", "v2", "difference"]
    assert lines[1].split() == ["labeled", "rows", "3,000", "3,000", "+0"]
    assert next(ln for ln in lines if ln.startswith("ROC")).split()[-3:] == [
        "0.5000", "0.8000", "+0.3000"]
    assert next(ln for ln in lines if ln.startswith("PSI")).split()[-3:] == ["-", "0.0100", "-"]
    assert lines[-1].split() == ["threshold", "0.2000", "0.3000", "+0.1000"]


def test_time_range_from_flags() -> None:
    now = 1_800_000_000_000
    assert time_range(None, None, "2h", now).start_ms == now - 7_200_000
    r = time_range("2027-01-15T08:00:00Z", "1800000600000", None, now)
    assert r.start_ms == parse_time("2027-01-15T08:00:00+00:00", "x") == now
    assert r.end_ms == now + 600_000
    assert parse_time("2027-01-15T08:00:00", "x") == r.start_ms  # no zone: UTC
    for args, match in (((None, None, None), "no time range"), (("1", None, "1h"), "either"),
                        (("yesterday", None, None), "ISO 8601"),
                        ((str(now), str(now), None), "empty time range"),
                        ((None, None, "2 hours"), "--last")):
        with pytest.raises(ConfigError, match=match):
            time_range(*args, now)


def test_decision_record_follows_its_schema_and_says_why() -> None:
    schema = orjson.loads((SCHEMAS / "model_decision.schema.json").read_bytes())
    full = {n: None for n in ("precision", "brier", "psi", "alert_rate")}
    c = Compared("fraud", "1", "2", {**full, **figs(roc_auc=0.798)}, {**full, **figs()},
                 (0.2, 0.3), (1, 2), (None, 2))
    decision = decide(Policy(), c.champion, c.candidate, True)
    action = action_for(decision, promote_if_better=True, shadow=False)
    key, value = decision_record(c, decision, Policy(), action, 99)
    record = orjson.loads(value)
    Draft202012Validator(schema).validate(record)
    assert key == b"model_decision|fraud|2"
    assert record["action"] == "kept" and not record["policy_passed"]
    assert record["reasons"] == ["roc_auc 0.8000 < champion 0.7980 + 0.005"]
    assert record["candidate"]["threshold"] == 0.3
    assert action_for(decision, False, True) == "shadowed"
    assert action_for(decision, False, False) == "none"
