"""The model store: add, promote, rollback and the ``models`` command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from tests.unit.helpers import logistic, training_data
from worker.cli import main
from worker.errors import ModelLoadError, ModelStoreError
from worker.model.store import (
    ModelStore,
    Pointer,
    StoredVersion,
    is_model_folder,
    read_pointer,
    read_pointer_state,
)
from worker.model.writer import write_bundle


def bundle(folder: Path, version: str, name: str = "unit") -> Path:
    return write_bundle(folder / f"{name}-{version}", logistic(seed=int(version)), name=name,
                        version=version, task="binary", features=("a", "b", "c"),
                        sample=training_data(n=16)[0])


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_add_copies_under_name_and_version_and_refuses_overwrite(
    store: ModelStore, tmp_path: Path
) -> None:
    added = store.add(bundle(tmp_path, "1"))
    assert added == StoredVersion("unit", "1", False)
    assert (store.root / "unit" / "1" / "model.json").is_file()
    with pytest.raises(ModelStoreError, match="already in the store"):
        store.add(bundle(tmp_path / "again", "1"))
    assert [p.name for p in (store.root / "unit").iterdir()] == ["1"]  # no staging left


def test_add_refuses_a_bundle_that_does_not_load(store: ModelStore, tmp_path: Path) -> None:
    src = bundle(tmp_path, "1")
    (src / "model.skops").write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        store.add(src)
    assert not (store.root / "unit").exists() or not any((store.root / "unit").iterdir())


def test_promote_writes_the_pointer_and_rollback_walks_back(
    store: ModelStore, tmp_path: Path
) -> None:
    for v in ("1", "2", "3"):
        store.add(bundle(tmp_path, v))
    folder = store.root / "unit"
    assert not is_model_folder(folder)
    with pytest.raises(ModelStoreError, match="no current version"):
        store.current("unit")
    store.promote("unit", "1")
    store.promote("unit", "2")
    store.promote("unit", "3")
    assert read_pointer(folder) == "3" and store.current("unit") == folder / "3"
    assert [v.version for v in store.list() if v.current] == ["3"]
    assert store.rollback("unit") == folder / "2"
    assert store.rollback("unit") == folder / "1"
    with pytest.raises(ModelStoreError, match="no previous version"):
        store.rollback("unit")
    assert read_pointer(folder) == "1"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left


def test_promote_refuses_unknown_or_broken_versions(store: ModelStore, tmp_path: Path) -> None:
    store.add(bundle(tmp_path, "1"))
    store.add(bundle(tmp_path, "2"))
    store.promote("unit", "1")
    with pytest.raises(ModelStoreError, match="not in the store"):
        store.promote("unit", "9")
    (store.root / "unit" / "2" / "model.skops").write_bytes(b"corrupt")
    with pytest.raises(ModelLoadError, match="sha256"):
        store.promote("unit", "2")
    assert read_pointer(store.root / "unit") == "1"
    assert store.history("unit") == []


def test_rollback_refuses_a_previous_version_that_broke(store: ModelStore, tmp_path: Path) -> None:
    store.add(bundle(tmp_path, "1"))
    store.add(bundle(tmp_path, "2"))
    store.promote("unit", "1")
    store.promote("unit", "2")
    shutil.rmtree(store.root / "unit" / "1")
    with pytest.raises(ModelStoreError, match="not in the store"):
        store.rollback("unit")
    assert read_pointer(store.root / "unit") == "2"
    assert store.history("unit") == ["1"]


def test_names_and_versions_cannot_escape_the_store(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="folder name"):
        store.add(bundle(tmp_path, "1", name=".."))
    with pytest.raises(ModelStoreError, match="folder name"):
        store.promote("unit", "../x")


def test_history_is_validated(store: ModelStore, tmp_path: Path) -> None:
    store.add(bundle(tmp_path, "1"))
    (store.root / "unit" / "history").write_bytes(orjson.dumps({"not": "a list"}))
    with pytest.raises(ModelStoreError, match="list of versions"):
        store.rollback("unit")


def test_models_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "store")
    for v in ("1", "2"):
        assert main(["models", "add", "--store", root, str(bundle(tmp_path, v))]) == 0
    assert main(["models", "promote", "--store", root, "unit", "1"]) == 0
    assert main(["models", "promote", "--store", root, "unit", "2"]) == 0
    assert main(["models", "rollback", "--store", root, "unit"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--store", root]) == 0
    assert capsys.readouterr().out.splitlines() == ["unit\t1\tcurrent", "unit\t2"]
    assert main(["models", "promote", "--store", root, "unit", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unit 5 is not in the store" in err[0]


def test_models_shadow_needs_a_control_topic_and_a_version_or_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "store")
    assert main(["models", "add", "--store", root, str(bundle(tmp_path, "1"))]) == 0
    capsys.readouterr()
    for argv, want in (
        (["unit", "1"], "models shadow needs --control-topic"),
        (["unit", "--control-topic", "ctl"], "a VERSION or --stop, one of them"),
        (["unit", "1", "--stop", "--control-topic", "ctl"], "a VERSION or --stop, one of them"),
    ):
        # Refused before any broker is asked (--bootstrap points nowhere).
        assert main(["models", "shadow", "--store", root, "--bootstrap", "127.0.0.1:1",
                     *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and want in err[0], err


def test_every_promote_and_rollback_takes_the_next_sequence(
    store: ModelStore, tmp_path: Path
) -> None:
    for v in ("1", "2"):
        store.add(bundle(tmp_path, v))
    folder = store.root / "unit"
    store.promote("unit", "1")
    assert read_pointer_state(folder) == Pointer("1", 1)
    assert (folder / "current").read_text() == "1\nsequence 1\n"
    store.promote("unit", "2")
    store.promote("unit", "2")  # re-issued: a new sequence, no new history entry
    assert read_pointer_state(folder) == Pointer("2", 3) and store.history("unit") == ["1"]
    store.rollback("unit", at_least=10)  # above what a control topic already carries
    assert read_pointer_state(folder) == Pointer("1", 11)
    (folder / "current").write_text("2\n")  # written before sequences existed
    assert read_pointer_state(folder) == Pointer("2", 0)
    store.promote("unit", "1")
    assert read_pointer_state(folder) == Pointer("1", 1)
    (folder / "current").write_text("2\nsequence x\n")
    with pytest.raises(ModelStoreError, match="sequence must be a whole number"):
        read_pointer_state(folder)


def test_joblib_bundles_need_allow_pickle_at_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_bundle(tmp_path / "j", logistic(), name="unit", version="1", task="binary",
                       features=("a", "b", "c"), sample=training_data(n=8)[0], fmt="joblib")
    root = str(tmp_path / "store")
    assert main(["models", "add", "--store", root, str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "set allow_pickle = true (--allow-pickle)" in err[0]
    assert main(["models", "add", "--store", root, "--allow-pickle", str(src)]) == 0


def test_score_file_reject_rate_must_be_a_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("")
    argv = ["score-file", str(src), str(tmp_path / "out.jsonl"), "--model",
            str(bundle(tmp_path, "1")), "--max-reject-rate", "1.5"]
    assert main(argv) == 2
    assert "--max-reject-rate must be in [0, 1], got 1.5" in capsys.readouterr().err
