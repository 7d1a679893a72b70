"""Bad input per feature type as dead letters naming the feature, and bundles that fail
their checks refused at start, at ``models add`` and at hot reload (the old model keeps
serving), on the real broker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from tests.integration.helpers import WorkerProc, produce, read_topic, wait_for
from tests.integration.model_kinds import payments, payments_pipeline, to_events
from worker.cli import main
from worker.devtools.demo import (
    DEMO_FEATURES,
    DEMO_MODEL_NAME,
    make_events,
    sample_transactions,
    train_demo,
)
from worker.model import write_bundle
from worker.model.bundle import sha256_file
from worker.model.store import ModelStore

TopicFactory = Callable[..., str]

BAD = [  # (field, value, the dead letter's message)
    ("amount", "12.5", "feature 'amount' must be a finite number, got str '12.5'"),
    ("amount", True, "feature 'amount' must be a finite number, got bool"),
    ("country", 5, "feature 'country' must be a string, got int 5"),
    ("country", "", "feature 'country' must be a non-empty string"),
    ("country", None, "feature 'country' is missing"),
    ("items", 2.5, "feature 'items' must be an integer, got float 2.5"),
    ("first_time", "yes", "feature 'first_time' must be true or false, got str 'yes'"),
    ("first_time", 1, "feature 'first_time' must be true or false, got int 1"),
]


def test_bad_values_of_each_type_are_dead_letters_naming_the_feature(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    df, y = payments(1200, 7)
    model = payments_pipeline().fit(df.iloc[:1000], y[:1000])
    rows = df.iloc[1000:1040].copy()
    rows.iloc[0, rows.columns.get_loc("country")] = "zz"  # unseen: the encoder ignores it
    bundle = write_bundle(tmp_path / "b", model, name="payments", version="1", task="binary",
                          sample=df.iloc[1000:])
    good = to_events("ok", rows, None)
    bad = []
    for i, (field, value, _) in enumerate(BAD):
        event = dict(good[i + 1], id=f"bad-{i}")
        if value is None:
            del event[field]
        else:
            event[field] = value
        bad.append(event)
    t = {"in": topic_factory("in", 1), "out": topic_factory("out", 1),
         "dlq": topic_factory("dlq", 1)}
    produce(kafka_bootstrap, t["in"], ((None, orjson.dumps(e)) for e in [*good, *bad]))
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"], "--output-topic",
                    t["out"], "--dlq-topic", t["dlq"], "--group", group_factory(), "--model",
                    str(bundle), "--metrics-port", "0"], tmp_path / "worker.log")
    try:
        preds = read_topic(kafka_bootstrap, t["out"], len(good), settle=0.5)
        dead = read_topic(kafka_bootstrap, t["dlq"], len(bad), settle=0.5)
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    got = {orjson.loads(d.value or b"")["id"]:
           (d.headers["dlq.error.kind"], d.headers["dlq.error.message"]) for d in dead}
    assert got == {f"bad-{i}": ("features", message) for i, (_, _, message) in enumerate(BAD)}
    scores = {r["id"]: r["score"] for r in (orjson.loads(p.value or b"") for p in preds)}
    expected = model.predict_proba(rows)[:, 1]
    assert abs(scores["ok-0"] - expected[0]) <= 1e-9  # the unseen category, as sklearn scores it
    assert max(abs(scores[e["id"]] - p) for e, p in zip(good, expected, strict=True)) <= 1e-9


def test_an_encoder_that_refuses_unknown_categories_makes_them_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df, y = payments(1200, 8)
    df["channel"] = df["channel"].fillna("none")
    model = payments_pipeline(handle_unknown="error").fit(df.iloc[:1000], y[:1000])
    bundle = write_bundle(tmp_path / "b", model, name="strict", version="1", task="binary",
                          sample=df.iloc[1000:])
    features = orjson.loads((bundle / "model.json").read_bytes())["features"]
    assert features[0] == {"name": "country", "type": "string", "missing": False,
                           "categories": ["de", "fr", "gb", "us"]}
    events = to_events("e", df.iloc[1000:1010], None)
    events[3]["country"] = "zz"
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    assert main(["score-file", str(src), str(out), "--model", str(bundle)]) == 1
    assert "1 of 10 rows rejected (10.00%), above --max-reject-rate 0" in capsys.readouterr().err
    [reject] = map(orjson.loads, (tmp_path / "out.jsonl.rejects.jsonl").read_bytes().splitlines())
    assert (reject["line"], reject["kind"]) == (4, "features")
    assert reject["reason"] == "feature 'country' has an unseen category str 'zz'"
    argv = ["score-file", str(src), str(out), "--model", str(bundle), "--max-reject-rate", "0.1"]
    assert main(argv) == 0


def _broken(store: ModelStore, good: Path, version: str, how: str) -> Path:
    """A copy of ``good`` as ``version``, broken in one way, placed straight in the store."""
    dest = store.version_path(DEMO_MODEL_NAME, version)
    shutil.copytree(good, dest)
    man = orjson.loads((dest / "model.json").read_bytes())
    man["version"] = version
    if how == "sample":  # a wrong sample score
        man["self_test"]["outputs"][5] = list(reversed(man["self_test"]["outputs"][5]))
    elif how == "types":  # the artifact needs a type the manifest does not list
        man["trusted_types"] = []
    else:  # the artifact changed after the manifest was written
        with (dest / man["artifact"]).open("ab") as handle:
            handle.write(b"changed")
    (dest / "model.json").write_bytes(orjson.dumps(man))
    return dest


def _hgb_bundle(folder: Path) -> Path:
    x, y = sample_transactions(np.random.default_rng(3), 4000)
    model = HistGradientBoostingClassifier(max_iter=20).fit(x[:3500], y[:3500])
    return write_bundle(folder, model, name=DEMO_MODEL_NAME, version="1", task="binary",
                        features=DEMO_FEATURES, sample=x[3500:])


def test_broken_bundles_are_refused_at_start_add_and_reload(
    kafka_bootstrap: str, topic_factory: TopicFactory, group_factory: Callable[[], str],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v1 = train_demo(tmp_path / "v1", seed=2, n=5_000)
        hgb = _hgb_bundle(tmp_path / "hgb")
    store = ModelStore(tmp_path / "store")
    store.add(v1)
    store.promote(DEMO_MODEL_NAME, "1")
    cases = {"2": ("sample", v1, "self-test: event 'self-test-5' scored"),
             "3": ("types", hgb, "needs types its manifest does not trust: "
                                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"),
             "4": ("artifact", v1, "sha256 mismatch for model.skops")}
    broken = {v: _broken(store, src, v, how) for v, (how, src, _) in cases.items()}
    for version, path in broken.items():  # at start: one line, exit 2, before any broker
        done = subprocess.run([sys.executable, "-m", "worker", "run", "--model", str(path),
                               "--metrics-port", "0"], capture_output=True, text=True)
        lines = [line for line in done.stderr.splitlines() if "error:" in line]
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert cases[version][2] in lines[0]
        copy = shutil.copytree(path, tmp_path / f"add-{version}")  # at models add
        assert main(["models", "add", "--store", str(tmp_path / "other"), str(copy)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and cases[version][2] in err[0]
    t = {"in": topic_factory("in", 1), "out": topic_factory("out", 1),
         "dlq": topic_factory("dlq", 1), "alerts": topic_factory("alerts", 1),
         "ctl": topic_factory("ctl", 1, {"cleanup.policy": "compact"})}
    w = WorkerProc(["--bootstrap", kafka_bootstrap, "--input-topic", t["in"], "--output-topic",
                    t["out"], "--dlq-topic", t["dlq"], "--group", group_factory(),
                    "--model", str(store.folder(DEMO_MODEL_NAME)), "--control-topic", t["ctl"],
                    "--alerts-topic", t["alerts"], "--model-poll-ms", "200",
                    "--metrics-port", "0"], tmp_path / "worker.log")
    try:
        for n, version in enumerate(broken, start=1):  # at hot reload, one after the other
            value = orjson.dumps({"name": DEMO_MODEL_NAME, "version": version,
                                  "sequence": n + 1})
            produce(kafka_bootstrap, t["ctl"], [(DEMO_MODEL_NAME.encode(), value)])
            wait_for(lambda n=n: w.output().count("model reload refused") == n, 60,  # type: ignore[misc]
                     f"refusal {n}")
        alerts = read_topic(kafka_bootstrap, t["alerts"], 3, settle=0.5)
        events, _ = make_events(np.random.default_rng(9), 500, 0, 1_790_000_000_000)
        produce(kafka_bootstrap, t["in"], ((None, orjson.dumps(e)) for e in events))
        preds = read_topic(kafka_bootstrap, t["out"], len(events), settle=0.5)
    finally:
        assert w.stop() == 0, w.output()[-3000:]
    reasons = {r["model_version"]: r["reason"] for r in
               (orjson.loads(a.value or b"") for a in alerts)}
    assert sorted(reasons) == ["2", "3", "4"]
    for version, (_, _, fragment) in cases.items():
        assert fragment in reasons[version]
    assert {orjson.loads(p.value or b"")["model_version"] for p in preds} == {"1"}
    assert len(preds) == len(events)
    assert sha256_file(v1 / "model.skops") == orjson.loads(
        (store.version_path(DEMO_MODEL_NAME, "1") / "model.json").read_bytes())["sha256"]
