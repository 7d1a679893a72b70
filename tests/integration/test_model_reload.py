"""Hot model reload against the real broker, under a continuous stream.

v1 serves; v2 is promoted through the model-control topic; a v3 with a wrong
sha256 and a v4 with a corrupt artifact are refused (v2 keeps serving, the
refusals go to the alerts topic); then the store pointer rolls back to v1.
Every event gets exactly one outcome, and per output partition the versions
run v1...v1 v2...v2 v1...v1: each switch happens once, at a batch boundary.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer
from jsonschema import Draft202012Validator

from tests.integration.helpers import ROOT, WorkerProc, produce, read_topic, wait_for
from worker.cli import main
from worker.devtools.demo import DEMO_MODEL_NAME, make_events, train_demo
from worker.model.bundle import sha256_file
from worker.model.store import ModelStore

TopicFactory = Callable[..., str]
RATE = 5_000  # events per second
CHUNK = 250
PARTITIONS = 4


class Feeder(threading.Thread):
    """Streams demo events at RATE until ``stop_after`` is set and reached."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.sent = 0
        self.limit: int | None = None
        self.ids: list[str] = []
        self.seconds = 0.0

    def stop_after(self, more: int) -> None:
        self.limit = self.sent + more

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                      "enable.idempotence": True})
        rng = np.random.default_rng(17)
        t0 = time.monotonic()
        for k in itertools.count():
            if self.limit is not None and self.sent >= self.limit:
                break
            events, _ = make_events(rng, CHUNK, self.sent, 1_790_000_000_000 + self.sent)
            for e in events:
                _produce(p, self.topic, e["card_id"].encode(), orjson.dumps(e))
            self.ids += [e["id"] for e in events]
            self.sent += CHUNK
            p.poll(0)
            time.sleep(max(0.0, t0 + (k + 1) * CHUNK / RATE - time.monotonic()))
        assert p.flush(60) == 0
        self.seconds = time.monotonic() - t0


class Collector(threading.Thread):
    """Reads the predictions as they come: (offset, model_version) per partition, and ids."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"collect-{topic}",
                           "auto.offset.reset": "earliest",
                           "enable.auto.commit": False})
        self.c.subscribe([topic])
        self.seen: dict[int, list[tuple[int, str]]] = defaultdict(list)
        self.ids: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for m in self.c.consume(2000, 0.2):
                if m.error() is None:
                    rec = orjson.loads(m.value() or b"")
                    self.ids.append(rec["id"])
                    self.seen[m.partition() or 0].append((m.offset() or 0, rec["model_version"]))
        self.c.close()

    def versions(self, partition: int) -> list[str]:
        return runs([v for _, v in sorted(list(self.seen[partition]))])

    def all_partitions(self, want: list[str]) -> Callable[[], bool]:
        return lambda: all(self.versions(p) == want for p in range(PARTITIONS))


def _produce(p: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            p.produce(topic, value, key)
            return
        except BufferError:
            p.poll(0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {v: train_demo(root / f"v{v}", seed=int(v), n=20_000, version=v) for v in ("1", "2")}


def broken_copy(store: ModelStore, src: Path, version: str, corrupt_artifact: bool) -> None:
    """A bundle placed straight into the store (as a bad disk or a bad copy would)."""
    dest = store.version_path(DEMO_MODEL_NAME, version)
    shutil.copytree(src, dest)
    man = orjson.loads((dest / "model.json").read_bytes())
    man["version"] = version
    if corrupt_artifact:  # the hash matches, the bytes are no skops file
        artifact = dest / man["artifact"]
        artifact.write_bytes(b"PK\x03\x04 not really a zip" + artifact.read_bytes()[:500])
        man["sha256"] = sha256_file(artifact)
    else:
        man["sha256"] = "0" * 64
    (dest / "model.json").write_bytes(orjson.dumps(man))


def reloaded_to(w: WorkerProc, version: str) -> Callable[[], bool]:
    def seen() -> bool:
        for line in w.output().splitlines():
            if line.startswith("{"):
                rec: dict[str, Any] = orjson.loads(line)
                if rec.get("msg") == "model reloaded" and rec.get("model_version") == version:
                    return True
        return False

    return seen


def runs(seq: list[str]) -> list[str]:
    return [v for v, _ in itertools.groupby(seq)]


def test_promote_refuse_and_roll_back_under_a_stream(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    trained: dict[str, Path], tmp_path: Path, report: Callable[[str], None],
) -> None:
    t = {"in": topic_factory("in", PARTITIONS), "out": topic_factory("out", PARTITIONS),
         "dlq": topic_factory("dlq", 1), "alerts": topic_factory("alerts", 1),
         "ctl": topic_factory("ctl", 1, {"cleanup.policy": "compact"})}
    store = ModelStore(tmp_path / "store")
    for path in trained.values():
        store.add(path)
    store.promote(DEMO_MODEL_NAME, "1")
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"],
                    "--group", group_factory(), "--model", str(store.folder(DEMO_MODEL_NAME)),
                    "--control-topic", t["ctl"], "--alerts-topic", t["alerts"],
                    "--model-poll-ms", "200", "--metrics-port", "0", "--batch-max", "500"],
                   tmp_path / "worker.log")
    feeder, out = Feeder(kafka_bootstrap, t["in"]), Collector(kafka_bootstrap, t["out"])
    feeder.start()
    out.start()

    sequence = iter(range(2, 100))  # above the pointer's: the promote of v1 took 1

    def control(version: str) -> None:
        value = orjson.dumps({"name": DEMO_MODEL_NAME, "version": version,
                              "sequence": next(sequence)})
        produce(kafka_bootstrap, t["ctl"], [(DEMO_MODEL_NAME.encode(), value)])

    try:
        wait_for(out.all_partitions(["1"]), 90, "v1 predictions on every partition")
        control("2")
        wait_for(out.all_partitions(["1", "2"]), 60, "v2 predictions on every partition")
        broken_copy(store, trained["2"], "3", corrupt_artifact=False)
        broken_copy(store, trained["2"], "4", corrupt_artifact=True)
        # One at a time: the worker acts on the highest sequence of a poll, so 3 and 4
        # read together would leave 3 unattempted (and unrefused).
        control("3")
        read_topic(kafka_bootstrap, t["alerts"], 1, settle=0.0)
        control("4")
        alerts = read_topic(kafka_bootstrap, t["alerts"], 2, settle=0.5)
        ctl = ["--store", str(store.root), "--control-topic", t["ctl"],
               "--bootstrap", kafka_bootstrap]
        # The pointer catches up with the fleet (above every published sequence) ...
        assert main(["models", "promote", *ctl, DEMO_MODEL_NAME, "2"]) == 0
        assert main(["models", "rollback", *ctl, DEMO_MODEL_NAME]) == 0  # ... and rolls back
        wait_for(out.all_partitions(["1", "2", "1"]), 60, "v1 again on every partition")
        feeder.stop_after(2 * RATE)
        feeder.join()
        wait_for(lambda: len(out.ids) >= feeder.sent, 90, "every prediction")
        time.sleep(3.0)  # room for duplicates to show up, if there were any
        dead = read_topic(kafka_bootstrap, t["dlq"], 0, settle=1.0)
    finally:
        feeder.stop_after(0)
        out.done.set()
        assert w.stop() == 0, w.output()[-3000:]
    report(f"model reload: {feeder.sent} events in {feeder.seconds:.1f}s "
           f"({feeder.sent / feeder.seconds:.0f} events/s) through v1 -> v2 -> v1")
    assert dead == []
    assert sorted(out.ids) == sorted(feeder.ids)  # nothing lost, nothing repeated
    for part in range(PARTITIONS):
        assert out.versions(part) == ["1", "2", "1"], part
    _check_alerts(alerts)
    log = w.output()
    assert log.count("model reload refused") == 2 and '"source":"control"' in log


def _check_alerts(alerts: list[Any]) -> None:
    schema = Draft202012Validator(orjson.loads(
        (ROOT / "schemas" / "model_refusal.schema.json").read_bytes()))
    got = {}
    for a in alerts:
        rec = orjson.loads(a.value or b"")
        schema.validate(rec)
        got[rec["model_version"]] = rec["reason"]
        assert a.key == f"model_refused|{DEMO_MODEL_NAME}|{rec['model_version']}".encode()
    assert set(got) == {"3", "4"}
    assert "sha256 mismatch" in got["3"]
    assert "skops" in got["4"]


def test_a_starting_worker_converges_on_the_latest_control_record(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    trained: dict[str, Path], tmp_path: Path,
) -> None:
    t = {"in": topic_factory("in", 2), "out": topic_factory("out", 2),
         "dlq": topic_factory("dlq", 1), "alerts": topic_factory("alerts", 1),
         "ctl": topic_factory("ctl", 1, {"cleanup.policy": "compact"})}
    store = ModelStore(tmp_path / "store")
    for path in trained.values():
        store.add(path)
    store.promote(DEMO_MODEL_NAME, "1")
    value = orjson.dumps({"name": DEMO_MODEL_NAME, "version": "2", "sequence": 2})
    produce(kafka_bootstrap, t["ctl"], [(b"other", b'{"name": "other", "version": "9"}'),
                                        (DEMO_MODEL_NAME.encode(), value)])
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"],
                    "--group", group_factory(), "--model", str(store.folder(DEMO_MODEL_NAME)),
                    "--control-topic", t["ctl"], "--alerts-topic", t["alerts"],
                    "--model-poll-ms", "200", "--metrics-port", "0"],
                   tmp_path / "worker.log")
    try:
        wait_for(reloaded_to(w, "2"), 60, "the swap to v2 from the control topic")
        events, _ = make_events(np.random.default_rng(3), 2_000, 0, 1_790_000_000_000)
        produce(kafka_bootstrap, t["in"],
                ((e["card_id"].encode(), orjson.dumps(e)) for e in events))
        preds = read_topic(kafka_bootstrap, t["out"], len(events), settle=1.0)
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    versions = {orjson.loads(p.value or b"")["model_version"] for p in preds}
    assert len(preds) == len(events) and versions == {"2"}
    assert "refused" not in w.output()


def test_shadow_model_publishes_beside_the_main_output(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    trained: dict[str, Path], tmp_path: Path,
) -> None:
    t = {"in": topic_factory("in", 2), "out": topic_factory("out", 2),
         "dlq": topic_factory("dlq", 1), "shadow": topic_factory("shadow", 2)}
    events, _ = make_events(np.random.default_rng(4), 3_000, 0, 1_790_000_000_000)
    produce(kafka_bootstrap, t["in"], ((e["card_id"].encode(), orjson.dumps(e)) for e in events))
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"],
                    "--output-topic", t["out"], "--dlq-topic", t["dlq"],
                    "--group", group_factory(), "--model", str(trained["1"]),
                    "--shadow-model", str(trained["2"]), "--shadow-topic", t["shadow"],
                    "--metrics-port", "0"], tmp_path / "worker.log")
    try:
        main = read_topic(kafka_bootstrap, t["out"], len(events), settle=1.0)
        shadow = read_topic(kafka_bootstrap, t["shadow"], len(events), settle=1.0)
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    main_recs = [orjson.loads(p.value or b"") for p in main]
    shadow_recs = [orjson.loads(p.value or b"") for p in shadow]
    assert {r["model_version"] for r in main_recs} == {"1"}
    assert {r["model_version"] for r in shadow_recs} == {"2"}
    assert sorted(r["id"] for r in main_recs) == sorted(r["id"] for r in shadow_recs)
    assert sorted(r["id"] for r in main_recs) == sorted(e["id"] for e in events)
    assert {p.key for p in shadow} == {e["card_id"].encode() for e in events}
