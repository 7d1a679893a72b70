"""Hot reload: instruction ordering, candidate checks, the watcher, and the swap in the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.unit.helpers import SCHEMAS, event, logistic, training_data
from tests.unit.stream.test_runner import Msg, make_runner
from worker.config import Settings
from worker.context import build_context
from worker.core.pipeline import ScoringContext
from worker.errors import ConfigError, ModelLoadError
from worker.kafka_io import ControlRecord
from worker.model.bundle import load_bundle
from worker.model.store import ModelStore
from worker.model.writer import write_bundle
from worker.stream.reload import (
    Refusal,
    Request,
    Swap,
    check_candidate,
    control_record,
    newest,
    parse_control,
    refusal_record,
)
from worker.stream.reloader import Reloader, make_reloader


def put(store: ModelStore, version: str, estimator: Any = None) -> Path:
    """Write a bundle straight into the store (bypassing add's checks, like a bad disk)."""
    return write_bundle(store.version_path("unit", version), estimator or logistic(),
                        name="unit", version=version, task="binary", features=("a", "b", "c"),
                        sample=training_data(n=16)[0])


def edit(path: Path, change: Any) -> None:
    man = orjson.loads((path / "model.json").read_bytes())
    change(man)
    (path / "model.json").write_bytes(orjson.dumps(man))


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    s = ModelStore(tmp_path / "store")
    put(s, "1")
    put(s, "2")
    s.promote("unit", "1")
    return s


class FakeControl:
    def __init__(self) -> None:
        self.records: list[ControlRecord] = []

    def send(self, name: str, version: str, at_ms: int, sequence: int | None = None) -> None:
        body: dict[str, Any] = {"name": name, "version": version}
        if sequence is not None:
            body["sequence"] = sequence
        value = orjson.dumps(body)
        self.records.append(ControlRecord(name.encode(), value, at_ms))

    def poll(self, timeout_s: float) -> list[ControlRecord]:
        out, self.records = self.records, []
        return out

    def close(self) -> None:
        pass


def test_without_sequences_the_newest_instruction_wins() -> None:
    reqs = [Request("2", 10, "control"), Request("3", 30, "control"), Request("4", 20, "pointer")]
    assert newest(reqs, (0, 0)) == Request("3", 30, "control")
    assert newest(reqs, (0, 30)) is None
    assert newest([Request("a", 5, "control"), Request("b", 5, "control")], (0, 0)) == Request(
        "b", 5, "control"
    )


def test_the_highest_sequence_wins_whatever_the_clocks_say() -> None:
    future = 2**50  # a record stamped far ahead of every clock
    reqs = [Request("2", future, "control", 4), Request("1", 10, "pointer", 5)]
    assert newest(reqs, (0, 0)) == Request("1", 10, "pointer", 5)
    assert newest(reqs, Request("1", 10, "pointer", 5).order) is None
    # Any sequenced instruction beats every unsequenced one, however late its stamp.
    assert newest([Request("9", future, "control")], Request("1", 0, "pointer", 1).order) is None


def test_control_records_for_other_models_or_malformed_are_ignored() -> None:
    assert parse_control(b'{"name": "unit", "version": "2"}', "unit") == ("2", 0)
    assert parse_control(b'{"name": "unit", "version": "2", "sequence": 7}', "unit") == ("2", 7)
    assert parse_control(b'{"name": "unit", "version": "2", "sequence": -1}', "unit") is None
    assert parse_control(b'{"name": "unit", "version": "2", "sequence": "7"}', "unit") is None
    assert parse_control(b'{"name": "other", "version": "2"}', "unit") is None
    assert parse_control(b'{"name": "unit"}', "unit") is None
    assert parse_control(b"not json", "unit") is None
    assert parse_control(None, "unit") is None
    key, value = control_record("unit", "3", 9)
    assert key == b"unit" and parse_control(value, "unit") == ("3", 9)


def test_candidates_must_pass_load_checks_and_their_self_test(store: ModelStore) -> None:
    assert check_candidate(store, "unit", "2").version == "2"
    with pytest.raises(ModelLoadError, match="not in the store"):
        check_candidate(store, "unit", "9")
    path = put(store, "3")
    man = orjson.loads((path / "model.json").read_bytes())
    man["sha256"] = "0" * 64
    (path / "model.json").write_bytes(orjson.dumps(man))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        check_candidate(store, "unit", "3")
    path = put(store, "4")
    edit(path, lambda man: man["self_test"]["outputs"][3].reverse())  # a wrong sample score
    load_bundle(path)  # passes every load check ...
    with pytest.raises(ModelLoadError, match="self-test: event 'self-test-3' scored"):
        check_candidate(store, "unit", "4")  # ... but not its self-test
    path = put(store, "5")
    edit(path, lambda man: man["self_test"]["events"][0].update(a="x"))
    with pytest.raises(ModelLoadError, match=r"'self-test-0' was rejected \(features: feature 'a'"):
        check_candidate(store, "unit", "5")


def test_refusal_record_follows_its_schema() -> None:
    schema = orjson.loads((SCHEMAS / "model_refusal.schema.json").read_bytes())
    key, value = refusal_record(Refusal("unit", "3", "sha256 mismatch", 99, "control"), "w1")
    Draft202012Validator(schema).validate(orjson.loads(value))
    assert key == b"model_refused|unit|3"


def test_watcher_follows_control_then_pointer_and_refuses_broken(store: ModelStore) -> None:
    control = FakeControl()
    r = Reloader(store.folder("unit"), "1", poll_s=0, control=control, clock_ms=lambda: 7)
    control.send("unit", "2", at_ms=2**50)  # no sequence: below the pointer's, ignored
    r.step()
    assert r.take() == []
    control.send("unit", "2", at_ms=1, sequence=1)  # the pointer's own sequence: not newer
    r.step()
    assert r.take() == []
    control.send("other", "2", at_ms=2**50, sequence=9)
    control.send("unit", "2", at_ms=1, sequence=2)
    r.step()
    [swap] = r.take()
    assert isinstance(swap, Swap) and swap.bundle.version == "2" and swap.source == "control"
    (put(store, "3") / "model.skops").write_bytes(b"corrupt")
    control.send("unit", "3", at_ms=1, sequence=3)
    r.step()
    [refusal] = r.take()
    assert isinstance(refusal, Refusal) and "sha256" in refusal.reason and refusal.at_ms == 7
    assert r.serving == "2"


def test_watcher_follows_the_pointer_without_control(store: ModelStore) -> None:
    r = Reloader(store.folder("unit"), "1", poll_s=0)
    r.step()
    assert r.take() == []
    store.promote("unit", "2")
    r.step()
    [swap] = r.take()
    assert isinstance(swap, Swap) and swap.bundle.version == "2" and swap.source == "pointer"
    store.rollback("unit")
    r.step()
    [back] = r.take()
    assert isinstance(back, Swap) and back.bundle.version == "1"


class ScriptedReloader:
    def __init__(self, script: list[list[Any]]) -> None:
        self.script = script

    def take(self) -> list[Any]:
        return self.script.pop(0) if self.script else []


def test_the_loop_swaps_between_batches_and_alerts_refusals(
    tmp_path: Path, store: ModelStore
) -> None:
    batches = [[Msg(orjson.dumps(event(i)), i)] for i in range(3)]
    runner, journal = make_runner(tmp_path, batches)
    v2 = check_candidate(store, "unit", "2")
    refused = Refusal("unit", "3", "sha256 mismatch", 5, "control")
    runner.reloader = ScriptedReloader([[], [Swap(v2, "control")], [refused]])
    old = runner.ctx.bundle.manifest
    runner.metrics.model_info.labels(old.name, old.version, old.sha256[:12], "none").set(1)
    runner.run()
    sent = [value for kind, (topic, value) in
            ((c[0], c[1]) for c in journal.calls if c[0] == "send")]
    versions = [orjson.loads(v).get("model_version") for v in sent if b'"score"' in v]
    assert versions == ["7", "2", "2"]
    [alert] = [orjson.loads(v) for v in sent if b"model_refused" in v]
    assert alert["model_version"] == "3" and alert["reason"] == "sha256 mismatch"
    reg = runner.metrics.registry
    assert reg.get_sample_value("scoring_model_reloads_total", {"result": "ok"}) == 1
    assert reg.get_sample_value("scoring_model_reloads_total", {"result": "refused"}) == 1
    info = {"model": "unit", "model_version": "2", "sha256": v2.manifest.sha256[:12],
            "library_mismatch": "none"}
    assert reg.get_sample_value("scoring_model_info", info) == 1
    old_info = {"model": "unit", "model_version": "7", "sha256": old.sha256[:12],
                "library_mismatch": "none"}
    assert reg.get_sample_value("scoring_model_info", old_info) is None


def test_shadow_scores_every_batch_again_without_touching_the_main_output(
    tmp_path: Path, store: ModelStore
) -> None:
    batches = [[Msg(orjson.dumps(event(i)), i) for i in range(3)], [Msg(b"bad", 3)]]
    runner, journal = make_runner(tmp_path, batches)
    runner.shadow = ScoringContext(check_candidate(store, "unit", "2"))
    runner.run()
    sent = [c[1] for c in journal.calls if c[0] == "send"]
    main = [orjson.loads(v) for topic, v in sent if topic == "out"]
    shadow = [orjson.loads(v) for topic, v in sent if topic == "predictions-shadow"]
    assert [p["model_version"] for p in main] == ["7"] * 3
    assert [p["model_version"] for p in shadow] == ["2"] * 3
    assert [p["id"] for p in shadow] == [p["id"] for p in main]
    assert [topic for topic, _ in sent].count("dlq") == 1  # the shadow adds no dead letters


def test_a_store_folder_serves_its_pointer_and_a_plain_bundle_has_no_reloader(
    tmp_path: Path, store: ModelStore
) -> None:
    folder = store.folder("unit")
    ctx = build_context(Settings(model=str(folder)))
    assert ctx.bundle.version == "1"
    reloader = make_reloader(Settings(model=str(folder)), "1")
    assert reloader is not None and reloader.poll_s == 1.0
    plain = str(store.version_path("unit", "2"))
    assert make_reloader(Settings(model=plain), "2") is None
    with pytest.raises(ConfigError, match="store folder"):
        make_reloader(Settings(model=plain, control_topic="model-control"), "2")
