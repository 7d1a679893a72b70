"""MLflow as a model source, without a server: references, masked credentials, the extra
kept optional, and the alias watcher's decisions (tests/integration/test_mlflow.py runs
the same against a real ``mlflow server`` and broker)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.unit.helpers import FEATURES, ROOT, logistic, training_data, without_package
from worker.config import Settings
from worker.errors import ConfigError, ModelLoadError
from worker.kafka_io import ControlRecord
from worker.mlflow_ref import ModelRef, masked_uri, mlflow_secrets, parse_ref
from worker.model.mlflow_source import TrackingUnavailable, load_start
from worker.model.writer import write_bundle
from worker.retrain.registry import open_registry
from worker.retrain.settings import RegisterIn
from worker.stream.mlflow_reloader import Fleet, MlflowReloader
from worker.stream.reload import Refusal, Swap

BLOCK_MLFLOW = without_package("mlflow")


def test_references() -> None:
    assert parse_ref("models:/fraud@champion") == ModelRef("fraud", alias="champion")
    assert parse_ref("models:/fraud/12") == ModelRef("fraud", version="12")
    assert parse_ref("models:/fraud/12").uri == "models:/fraud/12"
    for bad in ("models:/fraud", "models:/fraud/0", "models:/fraud/x", "models:/@a", "models:/a@"):
        with pytest.raises(ConfigError, match="models:/NAME@ALIAS or models:/NAME/VERSION"):
            parse_ref(bad)


def test_tracking_credentials_are_masked_and_redacted() -> None:
    uri = "https://alice:s3cr3t-pw@mlflow.example:8443/path"
    assert masked_uri(uri) == "https://alice:***@mlflow.example:8443/path"
    assert masked_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    s = Settings(model="models:/fraud@champion", mlflow_tracking_uri=uri)
    assert "s3cr3t-pw" not in str(s.masked())
    env = {"MLFLOW_TRACKING_URI": "http://bob:pw-from-env@h", "MLFLOW_TRACKING_TOKEN": "tok-123"}
    assert sorted(mlflow_secrets(uri, env)) == ["pw-from-env", "s3cr3t-pw", "tok-123"]


def test_without_the_extra_one_line_naming_it_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_MLFLOW, "run", "--model",
                             "models:/fraud@champion"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'scoring-worker[mlflow]'" in lines[0]


def test_a_worker_without_models_uri_imports_nothing_of_mlflow(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "b", logistic(), name="unit", version="1", task="binary",
                          sample=training_data(n=64, seed=5)[0], features=FEATURES)
    code = ("import sys\nfrom worker.cli import main\nfrom worker.stream.app import run_worker\n"
            "from worker.context import build_context\nfrom worker.config import Settings\n"
            f"build_context(Settings(model={str(folder)!r}))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


class FakeRegistry:
    """Where the alias points, and bundles written beforehand; ``down``: no answer."""

    threads = 1  # MlflowSource.threads: the worker's model_threads

    def __init__(self, root: Path) -> None:
        self.root, self.alias, self.down = root, "1", False
        self.made: list[str] = []

    def add(self, version: str) -> None:
        write_bundle(self.root / version, logistic(seed=int(version)), name="fraud",
                     version=version, task="binary", sample=training_data(n=64, seed=5)[0],
                     features=FEATURES)

    def resolve(self, ref: ModelRef) -> str:
        if self.down:
            raise TrackingUnavailable("models:/fraud@champion: connection refused")
        return self.alias

    def bundle(self, name: str, version: str) -> Path:
        self.made.append(version)
        if not (self.root / version).is_dir():
            raise ModelLoadError(f"models:/{name}/{version} has no input_example")
        return self.root / version


def test_alias_moves_swap_refuse_once_and_survive_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FakeRegistry(tmp_path)
    for v in ("1", "2"):
        registry.add(v)
    now = [0.0]
    r = MlflowReloader(registry, ModelRef("fraud", alias="champion"), "1", 0.1,  # type: ignore[arg-type]
                       clock_ms=lambda: 5, monotonic=lambda: now[0])
    r.step()
    assert r.take() == [] and registry.made == []
    registry.alias = "2"
    r.step()
    events = r.take()
    assert [type(e) for e in events] == [Swap] and r.serving == "2"
    assert isinstance(events[0], Swap) and events[0].bundle.version == "2"
    registry.alias = "3"  # no sample: refused once, not tried again until the alias moves
    r.step()
    r.step()
    refused = r.take()
    assert len(refused) == 1 and isinstance(refused[0], Refusal)
    assert refused[0].version == "3" and "input_example" in refused[0].reason
    assert r.serving == "2" and registry.made == ["2", "3"]
    caplog.set_level(logging.INFO, "worker.stream.mlflow_reloader")
    registry.down = True
    for t in range(0, 150, 1):  # 150 s of polls: a warning at 0, 60 and 120 s
        now[0] = float(t)
        r.step()
    warnings = [x for x in caplog.records if x.levelno == logging.WARNING]
    assert len(warnings) == 3 and "still serving fraud 2" in warnings[0].getMessage()
    registry.down, registry.alias = False, "1"
    r.step()
    assert [e.bundle.version for e in r.take() if isinstance(e, Swap)] == ["1"]
    assert any("answers again" in x.getMessage() for x in caplog.records)


@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle"])
def test_a_pickled_version_is_refused_unless_allow_pickle(tmp_path: Path, fmt: str) -> None:
    from worker.model.mlflow_source import convert

    (tmp_path / "MLmodel").write_text(
        "artifact_path: model\nflavors:\n  sklearn:\n    pickled_model: model.pkl\n"
        f"    serialization_format: {fmt}\n    sklearn_version: 1.5.0\n")
    with pytest.raises(ModelLoadError, match=f"serialized with {fmt}.*allow_pickle"):
        convert(tmp_path, tmp_path / "out", name="fraud", version="3", sample=lambda: None,
                lineage={})
    # allowed: it goes on to the next check (this folder has no signature)
    with pytest.raises(ModelLoadError, match="no signature"):
        convert(tmp_path, tmp_path / "out", name="fraud", version="3", sample=lambda: None,
                lineage={}, allow_pickle=True)


class FakeControl:
    """A control topic: records handed to the next poll; what the worker published."""

    def __init__(self) -> None:
        self.pending: list[ControlRecord] = []
        self.published: list[str] = []

    def poll(self, timeout_s: float) -> list[ControlRecord]:
        out, self.pending = self.pending, []
        return out

    def close(self) -> None:
        pass

    def record(self, version: str, sequence: int) -> None:
        value = orjson.dumps({"name": "fraud", "version": version, "sequence": sequence})
        self.pending.append(ControlRecord(b"fraud", value, 0))

    def publish(self, version: str) -> int:
        self.published.append(version)
        return 7


def test_a_fleet_swaps_on_the_first_worker_that_sees_the_alias_move(tmp_path: Path) -> None:
    registry = FakeRegistry(tmp_path)
    for v in ("1", "2", "3"):
        registry.add(v)
    ctl = FakeControl()
    fleet = Fleet(ctl, ctl.publish, last=4)  # sequence 4 was on the topic at start
    r = MlflowReloader(registry, ModelRef("fraud", alias="champion"), "1", 60,  # type: ignore[arg-type]
                       clock_ms=lambda: 5, fleet=fleet)
    ctl.record("3", 4)  # history: the alias, just resolved, says 1
    r.follow(ctl.poll(0))
    assert r.take() == [] and r.serving == "1"
    ctl.record("2", 5)  # another worker saw the alias move to 2 first
    r.follow(ctl.poll(0))
    [swap] = r.take()
    assert isinstance(swap, Swap) and swap.bundle.version == "2" and swap.source == "control"
    registry.alias = "2"  # this worker's own poll then finds what it serves: nothing to do
    r.step()
    assert r.take() == [] and ctl.published == [] and registry.made == ["2"]
    registry.alias = "3"  # this worker sees a move first: swaps and tells the fleet
    r.step()
    [swap] = r.take()
    assert isinstance(swap, Swap) and swap.source == "mlflow" and ctl.published == ["3"]
    assert fleet.last == 7
    ctl.record("3", 7)  # its own record comes back: nothing to do
    r.follow(ctl.poll(0))
    registry.alias = "4"  # a version that fails its checks is not announced
    r.step()
    assert [type(e) for e in r.take()] == [Refusal] and ctl.published == ["3"]


def test_start_up_waits_for_the_tracking_server_then_gives_up_in_one_line(
    tmp_path: Path,
) -> None:
    registry = FakeRegistry(tmp_path)
    registry.add("1")
    registry.down = True
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s
        if now[0] >= 3:
            registry.down = False

    bundle = load_start(registry, "models:/fraud@champion", 10, sleep,  # type: ignore[arg-type]
                        lambda: now[0])
    assert bundle.version == "1" and now[0] == 3.0
    registry.down, now[0] = True, 0.0
    with pytest.raises(TrackingUnavailable, match=r"did not answer within 5s"):
        load_start(registry, "models:/fraud@champion", 5, lambda s: now.__setitem__(0, now[0] + s),  # type: ignore[arg-type]
                   lambda: now[0])
    assert now[0] == 5.0
    registry.down = False  # a model or alias that is not there: at once, no waiting
    registry.alias, now[0] = "9", 0.0
    with pytest.raises(ModelLoadError):
        load_start(registry, "models:/fraud@champion", 5, lambda s: now.__setitem__(0, 99),  # type: ignore[arg-type]
                   lambda: now[0])
    assert now[0] == 0.0


def test_a_worker_whose_tracking_server_is_down_exits_1_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--model", "models:/fraud@champion",
         "--mlflow-tracking-uri", "http://127.0.0.1:1", "--start-timeout-s", "1",
         "--log-level", "ERROR", "--metrics-port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "MLflow did not answer within 1s (start_timeout_s)" in line


def test_retrain_register_mlflow_needs_the_extra_and_an_alias() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_MLFLOW, "retrain", "--register",
                             "mlflow", "--model", "models:/fraud@champion", "--last", "1h"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "pip install 'scoring-worker[mlflow]'" in line
    with pytest.raises(ConfigError, match="models:/NAME@ALIAS"):
        open_registry(RegisterIn.MLFLOW, "models:/fraud/3", False, {})
    with pytest.raises(ConfigError, match="--register mlflow"):
        open_registry(RegisterIn.STORE, "models:/fraud@champion", False, {})


def test_lineage_becomes_flat_tags() -> None:
    from worker.retrain.mlflow_registry import lineage_tags

    tags = lineage_tags({"data": {"input_topic": "tx", "start_ms": 5}, "seed": 0,
                         "policy": {"require": [{"metric": "roc_auc"}]}, "empty": {}})
    assert tags == {"scoring_worker.data.input_topic": "tx",
                    "scoring_worker.data.start_ms": "5", "scoring_worker.seed": "0",
                    "scoring_worker.policy.require": '[{"metric":"roc_auc"}]',
                    "scoring_worker.empty": "{}"}
