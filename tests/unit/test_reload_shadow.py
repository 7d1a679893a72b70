"""Shadow models set through the control topic: the record, the watcher, the loop."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.unit.helpers import event
from tests.unit.test_reload import FakeControl, ScriptedReloader, put
from tests.unit.test_runner import Msg, make_runner
from worker.kafka_io import ControlRecord
from worker.model.store import ModelStore
from worker.stream.reload import (
    Refusal,
    ShadowSwap,
    check_candidate,
    control_record,
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
    key, value = shadow_record("unit", "2")
    assert key == b"unit|shadow" and orjson.loads(value) == {"name": "unit", "shadow": "2"}
    assert parse_shadow(value, "unit") == (True, "2")
    assert parse_control(value, "unit") is None  # an older worker would ignore it too
    assert parse_shadow(shadow_record("unit", None)[1], "unit") == (True, None)
    assert parse_shadow(value, "other") == (False, None)
    key, value = control_record("unit", "3")
    assert key == b"unit" and parse_control(value, "unit") == "3"
    assert parse_shadow(value, "unit") == (False, None)
    assert parse_shadow(b'{"name": "unit", "shadow": 5}', "unit") == (False, None)
    assert parse_shadow(b"not json", "unit") == (False, None)


def send_shadow(control: FakeControl, version: str | None) -> None:
    key, value = shadow_record("unit", version)
    control.records.append(ControlRecord(key, value, 2**50))


def test_watcher_loads_checks_and_stops_the_shadow(store: ModelStore) -> None:
    control = FakeControl()
    r = Reloader(store.folder("unit"), "1", poll_s=0, control=control, clock_ms=lambda: 7)
    send_shadow(control, "2")
    r.step()
    [ev] = r.take()
    assert isinstance(ev, ShadowSwap) and ev.bundle is not None and ev.bundle.version == "2"
    assert r.serving == "1"  # the main model is untouched
    send_shadow(control, "2")  # the same instruction again (a re-read topic): nothing to do
    r.step()
    assert r.take() == []
    send_shadow(control, "9")  # not in the store: refused, like a bad promotion
    r.step()
    [refusal] = r.take()
    assert isinstance(refusal, Refusal) and refusal.version == "9"
    send_shadow(control, None)
    r.step()
    assert r.take() == [ShadowSwap(None, "control")]


def test_the_loop_starts_and_stops_shadow_scoring_between_batches(
    tmp_path: Path, store: ModelStore
) -> None:
    batches = [[Msg(orjson.dumps(event(i)), i)] for i in range(4)]
    runner, journal = make_runner(tmp_path, batches)
    v2 = check_candidate(store, "unit", "2")
    runner.reloader = ScriptedReloader([[], [ShadowSwap(v2, "control")], [],
                                        [ShadowSwap(None, "control")]])  # fmt: skip
    runner.run()
    sent = [c[1] for c in journal.calls if c[0] == "send"]
    shadow = [orjson.loads(v)["id"] for topic, v in sent if topic == "predictions-shadow"]
    assert shadow == ["e1", "e2"]
    assert {orjson.loads(v)["model_version"] for t, v in sent if t == "out"} == {"7"}
