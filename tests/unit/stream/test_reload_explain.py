"""With --explain, a reload to a model that cannot be explained is refused like any bad
reload: the worker keeps serving (and explaining) the model it has, and announces why."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
from sklearn.neighbors import KNeighborsClassifier

from tests.unit.helpers import event, save, training_data
from tests.unit.stream.test_reload import ScriptedReloader
from tests.unit.stream.test_runner import Msg, make_runner
from worker.model.bundle import load_bundle
from worker.stream.reload import Swap


def test_a_reload_to_a_model_without_reasons_is_refused(tmp_path: Path) -> None:
    batches = [[Msg(orjson.dumps(event(i)), i)] for i in range(2)]
    runner, journal = make_runner(tmp_path / "runner", batches)
    runner.ctx = dataclasses.replace(runner.ctx, explain=2)
    x, y = training_data(n=100)
    knn = load_bundle(save(tmp_path / "knn", KNeighborsClassifier().fit(x, y)))
    runner.reloader = ScriptedReloader([[], [Swap(knn, "pointer")]])
    runner.run()
    sent = [c[1][1] for c in journal.calls if c[0] == "send"]
    predictions = [orjson.loads(v) for v in sent if b'"score"' in v]
    assert [p["model_version"] for p in predictions] == ["7", "7"]
    assert all(len(p["reasons"]["top"]) == 2 for p in predictions)
    [alert] = [orjson.loads(v) for v in sent if b"model_refused" in v]
    assert alert["reason"].startswith("--explain: no explainer for KNeighborsClassifier")
    reg = runner.metrics.registry
    assert reg.get_sample_value("scoring_model_reloads_total", {"result": "refused"}) == 1
    assert not reg.get_sample_value("scoring_model_reloads_total", {"result": "ok"})
