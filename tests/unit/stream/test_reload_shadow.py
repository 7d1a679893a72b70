"""Shadow models set through the control topic: the record, the watcher, the loop."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.unit.helpers import event
from tests.unit.stream.test_reload import FakeControl, ScriptedReloader, put
from tests.unit.stream.test_runner import Msg, make_runner
from worker.kafka_io import ControlRecord
from worker.model.store import ModelStore
from worker.stream.reload import (
    Refusal,
    ShadowInstruction,
    ShadowSwap,
    check_candidate,
    control_record,
    newest_shadow,
    parse_control,
    parse_shadow,
    shadow_record,
)
from worker.stream.reloader import Reloader


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    s = ModelStore(tmp_path / "store")
    put(s, "1")
    put(s, "2")
    s.promote("unit", "1")
    return s


def test_shadow_records_are_not_promotions_and_promotions_are_not_shadows() -> None:
    key, value = shadow_record("unit", "2", 4)
    assert key == b"unit|shadow"
    assert orjson.loads(value) == {"name": "unit", "shadow": "2", "sequence": 4}
    assert parse_shadow(value, "unit") == ShadowInstruction("2", 4)
    assert parse_control(value, "unit") is None  # an older worker would ignore it too
    assert parse_shadow(shadow_record("unit", None, 5)[1], "unit") == ShadowInstruction(None, 5)
    assert parse_shadow(value, "other") is None
    key, value = control_record("unit", "3", 9)
    assert key == b"unit" and parse_control(value, "unit") == ("3", 9)
    assert parse_shadow(value, "unit") is None
    assert parse_shadow(b'{"name": "unit", "shadow": 5}', "unit") is None
    assert parse_shadow(b'{"name": "unit", "shadow": "2", "sequence": -1}', "unit") is None
    assert parse_shadow(b'{"name": "unit", "shadow": "2", "sequence": "4"}', "unit") is None
    # Records from before shadow sequences: sequence 0.
    assert parse_shadow(b'{"name": "unit", "shadow": "2"}', "unit") == ShadowInstruction("2")
    assert parse_shadow(b"not json", "unit") is None


def test_the_highest_shadow_sequence_wins_and_unsequenced_ones_only_before_it() -> None:
    a, b, c = ShadowInstruction("a", 3), ShadowInstruction("b", 5), ShadowInstruction("c", 4)
    assert newest_shadow([a, b, c], -1) == b  # not the last on the topic: the highest
    assert newest_shadow([a, b, c], 5) is None  # in force already
    old, older = ShadowInstruction("x"), ShadowInstruction(None)
    assert newest_shadow([old, older], -1) == older  # without sequences: the last one
    assert newest_shadow([old], 0) == old  # still unsequenced: topic order, as before
    assert newest_shadow([old, a], -1) == a
    assert newest_shadow([old], 3) is None  # a sequenced one is in force


def send_shadow(control: FakeControl, version: str | None, sequence: int) -> None:
    key, value = shadow_record("unit", version, sequence)
    control.records.append(ControlRecord(key, value, 2**50))


def test_watcher_loads_checks_and_stops_the_shadow(store: ModelStore) -> None:
    control = FakeControl()
    r = Reloader(store.folder("unit"), "1", poll_s=0, control=control, clock_ms=lambda: 7)
    send_shadow(control, "2", 1)
    r.step()
    [ev] = r.take()
    assert isinstance(ev, ShadowSwap) and ev.bundle is not None and ev.bundle.version == "2"
    assert r.serving == "1"  # the main model is untouched
    send_shadow(control, "2", 1)  # the same instruction again (a re-read topic): nothing
    r.step()
    assert r.take() == []
    send_shadow(control, "9", 2)  # not in the store: refused, like a bad promotion
    r.step()
    [refusal] = r.take()
    assert isinstance(refusal, Refusal) and refusal.version == "9"
    # An older instruction read late (another partition, a slow publisher) changes nothing.
    send_shadow(control, None, 1)
    r.step()
    assert r.take() == []
    send_shadow(control, None, 3)
    send_shadow(control, "2", 0)  # unsequenced, once sequenced ones are in force: ignored
    r.step()
    assert r.take() == [ShadowSwap(None, "control")]


def test_the_loop_starts_and_stops_shadow_scoring_between_batches(
    tmp_path: Path, store: ModelStore
) -> None:
    batches = [[Msg(orjson.dumps(event(i)), i)] for i in range(4)]
    runner, journal = make_runner(tmp_path, batches)
    v2 = check_candidate(store, "unit", "2")
    runner.reloader = ScriptedReloader([[], [ShadowSwap(v2, "control")], [],
                                        [ShadowSwap(None, "control")]])
    runner.run()
    sent = [c[1] for c in journal.calls if c[0] == "send"]
    shadow = [orjson.loads(v)["id"] for topic, v in sent if topic == "predictions-shadow"]
    assert shadow == ["e1", "e2"]
    assert {orjson.loads(v)["model_version"] for t, v in sent if t == "out"} == {"7"}
