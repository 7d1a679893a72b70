"""Model control is ordered by the instruction's sequence, not by clocks (real broker).

A control record stamped 30 minutes ahead (a producer with a skewed clock) switches the
fleet as its sequence says, and then a later ``models promote`` and ``models rollback``
(pointer and control record, the next sequences) still take effect. A pointer written
before sequences existed still works, and the worker logs when what it serves differs
from what ``current`` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer

from tests.integration.helpers import WorkerProc, produce, read_topic, wait_for
from tests.integration.test_model_reload import reloaded_to
from worker.cli import main
from worker.devtools.demo import DEMO_MODEL_NAME, make_events, train_demo
from worker.model.store import CURRENT, ModelStore, read_pointer_state

TopicFactory = Callable[..., str]
SKEW_MS = 30 * 60 * 1000


def _control(bootstrap: str, topic: str, version: str, sequence: int, ts_ms: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    value = orjson.dumps({"name": DEMO_MODEL_NAME, "version": version, "sequence": sequence})
    p.produce(topic, value, DEMO_MODEL_NAME.encode(), timestamp=ts_ms)
    assert p.flush(30) == 0


def test_the_highest_sequence_wins_over_a_control_record_from_the_future(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path, report: Callable[[str], None],
) -> None:
    t = {"in": topic_factory("in", 1), "out": topic_factory("out", 1),
         "dlq": topic_factory("dlq", 1), "alerts": topic_factory("alerts", 1),
         "ctl": topic_factory("ctl", 1, {"cleanup.policy": "compact"})}
    store = ModelStore(tmp_path / "store")
    for v in ("1", "2"):
        store.add(train_demo(tmp_path / f"v{v}", seed=int(v), n=5_000, version=v))
    folder = store.folder(DEMO_MODEL_NAME)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CURRENT).write_text("1\n")  # a pointer from before sequences: sequence 0
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"], "--output-topic",
                    t["out"], "--dlq-topic", t["dlq"], "--group", group_factory(),
                    "--model", str(folder), "--control-topic", t["ctl"], "--alerts-topic",
                    t["alerts"], "--model-poll-ms", "200", "--metrics-port", "0"],
                   tmp_path / "worker.log")
    rng = np.random.default_rng(5)
    served: list[set[str]] = []

    def serves(version: str, step: int) -> None:
        events, _ = make_events(rng, 200, step * 1000, 1_790_000_000_000)
        produce(kafka_bootstrap, t["in"], ((None, orjson.dumps(e)) for e in events))
        want = (step + 1) * 200
        preds = read_topic(kafka_bootstrap, t["out"], want, settle=0.3)
        versions = {orjson.loads(p.value or b"")["model_version"] for p in preds
                    if orjson.loads(p.value or b"")["id"] in {e["id"] for e in events}}
        served.append(versions)
        assert versions == {version}, (step, versions)

    ctl = ["--store", str(store.root), "--control-topic", t["ctl"], "--bootstrap",
           kafka_bootstrap]
    try:
        serves("1", 0)
        # A skewed host promotes 2: pointer and record get sequence 1, the record is
        # stamped 30 minutes ahead.
        store.promote(DEMO_MODEL_NAME, "2")
        assert read_pointer_state(folder).sequence == 1
        _control(kafka_bootstrap, t["ctl"], "2", 1, int(time.time() * 1000) + SKEW_MS)
        wait_for(reloaded_to(w, "2"), 60, "the swap to 2")
        serves("2", 1)
        # An operator with a good clock promotes 1 again: sequence 2 wins.
        assert main(["models", "promote", *ctl, DEMO_MODEL_NAME, "1"]) == 0
        wait_for(lambda: w.output().count('"msg":"model reloaded"') >= 2, 60, "the swap to 1")
        serves("1", 2)
        # ... and rolls back to 2 (sequence 3), then promotes 1 through the pointer only.
        assert main(["models", "rollback", *ctl, DEMO_MODEL_NAME]) == 0
        wait_for(lambda: w.output().count('"msg":"model reloaded"') >= 3, 60, "rollback")
        serves("2", 3)
        store.promote(DEMO_MODEL_NAME, "1")
        wait_for(lambda: w.output().count('"msg":"model reloaded"') >= 4, 60, "pointer")
        serves("1", 4)
        # A control record alone (sequence 9) moves the fleet away from the pointer: logged.
        _control(kafka_bootstrap, t["ctl"], "2", 9, int(time.time() * 1000))
        wait_for(lambda: w.output().count('"msg":"model reloaded"') >= 5, 60, "control only")
        serves("2", 5)
        wait_for(lambda: "while" in w.output() and "says 1" in w.output(), 10, "the log line")
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    assert read_pointer_state(folder).sequence == 4
    log = w.output()
    assert "model reload refused" not in log
    report(f"model control by sequence: versions served per step {served} "
           "(a control record stamped 30 min ahead did not pin the model)")
