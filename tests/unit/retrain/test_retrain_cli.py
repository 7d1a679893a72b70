"""``scoring-worker retrain`` refuses bad settings with one line and exit 2, before any Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.helpers import binary_bundle
from worker.cli import main
from worker.model.store import ModelStore


@pytest.fixture
def store_folder(tmp_path: Path) -> str:
    store = ModelStore(tmp_path / "store")
    store.add(binary_bundle(tmp_path / "b").path)
    store.promote("unit", "7")
    return str(store.folder("unit"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["retrain", "--bootstrap", "127.0.0.1:1", *args])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


@pytest.mark.parametrize(("args", "message"), [
    ((), "no model (give --model STORE/<name>"),
    (("--model", "MODEL"), "no time range: give --last"),
    (("--model", "MODEL", "--last", "1h", "--from", "0"), "either --last or --from"),
    (("--model", "MODEL", "--last", "1h", "--holdout-fraction", "1.5"), "holdout_fraction"),
    (("--model", "MODEL", "--last", "1h", "--shadow"), "--shadow needs --control-topic"),
    (("--model", "MODEL", "--last", "1h", "--shadow", "--promote-if-better",
      "--control-topic", "ctl"), "exclude each other"),
    (("--model", "PLAIN", "--last", "1h"), "is not a model store folder"),
])
def test_settings_mistakes_end_with_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], store_folder: str, args: tuple[str, ...], message: str
) -> None:
    plain = str(Path(store_folder) / "7")
    args = tuple(store_folder if a == "MODEL" else plain if a == "PLAIN" else a for a in args)
    code, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("scoring-worker retrain: error: ") and message in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_bad_policy_names_the_file_and_the_key(
    capsys: pytest.CaptureFixture[str], store_folder: str, tmp_path: Path
) -> None:
    config = tmp_path / "retrain.toml"
    config.write_text(f'model = "{store_folder}"\n[policy]\nthreshold = "precision"\n')
    code, err = run(capsys, "--config", str(config), "--last", "1h")
    assert code == 2 and str(config) in err and "needs threshold_target" in err
    config.write_text(f'model = "{store_folder}"\nbatch_max = 5\n')
    code, err = run(capsys, "--config", str(config), "--last", "1h")
    assert code == 2 and "unknown setting 'batch_max'" in err


def test_the_documented_retrain_configuration_loads(tmp_path: Path) -> None:
    from worker import config
    from worker.retrain.policy import Requirement, parse_policy
    from worker.retrain.settings import RetrainSettings
    from worker.retrain.threshold import ThresholdTarget

    page = Path(__file__).resolve().parents[3] / "docs" / "lifecycle" / "retrain.md"
    after = page.read_text().split("The policy is the TOML file's `[policy]` table:", 1)[1]
    block = after.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "retrain.toml"
    path.write_text(block)
    s = config.load_into(RetrainSettings, path, {}, {}, tables=("policy",))
    assert s.model == "/models/fraud-demo" and s.control_topic == "model-control"
    policy = parse_policy(config.read_toml(path)["policy"])
    assert policy.threshold == ThresholdTarget("alert_rate", 0.02)
    assert policy.requirements == (Requirement("roc_auc", 0.005), Requirement("recall", 0.0))
