"""Every mistake a newcomer makes ends in one line on stderr and the right exit status.

The table holds the mistakes of issue 13 (and more found while fixing them). Each row
runs the real command line in-process, captures the file descriptors (so a raw
librdkafka line would be caught too) and checks: the exit status, exactly one line
``scoring-worker <command>: error: <what> (<hint>)``, every other stderr line a JSON log
line, and no traceback. Mistakes in the arguments name a broker that does not exist
(127.0.0.1:1): reaching it would exit 1, so exit 2 shows the broker was not touched.
"""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.unit.helpers import binary_bundle
from worker import cli, shutdown

NOWHERE = ("--bootstrap", "127.0.0.1:1", "--start-timeout-s", "1")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    model = root / "model"
    binary_bundle(model)
    nul = root / "nul-model"
    binary_bundle(nul)
    manifest = orjson.loads((nul / "model.json").read_bytes())
    manifest["name"] = "fraud\u0000x"
    (nul / "model.json").write_bytes(orjson.dumps(manifest))
    (root / "events.jsonl").write_text('{"id": "1", "a": 1, "b": 2, "c": 3}\n')
    (root / "typo.toml").write_text("bach_max = 100\n")
    return {"model": str(model), "nul": str(nul), "root": str(root),
            "events": str(root / "events.jsonl"), "typo": str(root / "typo.toml")}


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# (id, argv with {placeholders}, environment, exit status, text the error line holds)
MISTAKES = [
    ("bootstrap-without-port", ["run", "--model", "{model}", "--bootstrap", "localhost"], {},
     2, "--bootstrap localhost: 'localhost' has no port (bootstrap: host:port"),
    ("batch-max-negative", ["run", "--model", "{model}", *NOWHERE, "--batch-max", "-3"], {},
     2, "--batch-max -3: below the minimum 1 (batch_max: a whole number, 1 to 1000000)"),
    ("guarantee-unknown", ["run", "--model", "{model}", *NOWHERE, "--guarantee",
                           "exactly-twice"], {},
     2, "--guarantee exactly-twice: not one of the choices (guarantee: one of at-least-once, "
        "exactly-once)"),
    ("max-in-flight-zero", ["run", "--model", "{model}", *NOWHERE, "--max-in-flight", "0"], {},
     2, "--max-in-flight 0: below the minimum 1 (max_in_flight: a whole number, 1 to 1000000)"),
    ("batch-max-zero", ["run", "--model", "{model}", *NOWHERE, "--batch-max", "0"], {},
     2, "--batch-max 0: below the minimum 1"),
    ("log-level-loud", ["run", "--model", "{model}", *NOWHERE, "--log-level", "LOUD"], {},
     2, "--log-level LOUD: not a log level (log_level: DEBUG, INFO, WARNING, ERROR or "),
    ("kafka-property-typo", ["run", "--model", "{model}", *NOWHERE, "--kafka",
                             "sasl.pasword=x"], {},
     2, 'librdkafka property sasl.pasword: No such configuration property: "sasl.pasword"'),
    ("score-file-missing-input", ["score-file", "{root}/missing.jsonl", "{root}/out.jsonl",
                                  "--model", "{model}"], {},
     2, "missing.jsonl: no such file (give the events to score"),
    ("score-file-missing-folder", ["score-file", "{events}", "{root}/no/such/out.jsonl",
                                   "--model", "{model}"], {},
     2, "its folder {root}/no/such does not exist (create it first)"),
    ("models-list-missing-store", ["models", "list", "--store", "{root}/no-store"], {},
     2, "--store {root}/no-store: no such folder"),
    ("monitor-bad-window", ["monitor", *NOWHERE, "--windows", "5x"], {},
     2, "--windows 5x: '5x' is not a window size (windows: sizes such as 30s, 5m"),
    ("metrics-port-in-use", ["run", "--model", "{model}", *NOWHERE, "--metrics-host",
                             "127.0.0.1", "--metrics-port", "{busy}"], {},
     2, "--metrics-port {busy}: 127.0.0.1:{busy} is already in use"),
    ("unreachable-broker", ["run", "--model", "{model}", *NOWHERE, "--metrics-port", "0"], {},
     1, "cannot reach the Kafka broker at 127.0.0.1:1 within 1s: nothing accepts connections"),
    ("unknown-variable", ["run", "--model", "{model}", *NOWHERE],
     {"SCORING_BATCH_MAXX": "10"}, 2, "SCORING_BATCH_MAXX: unknown setting (did you mean "
     "SCORING_BATCH_MAX?)"),
    ("unknown-toml-key", ["run", "--model", "{model}", *NOWHERE, "--config", "{typo}"], {},
     2, "unknown setting 'bach_max' (did you mean batch_max?)"),
    ("no-model", ["run", *NOWHERE], {}, 2, "no model (give --model PATH"),
    ("model-missing", ["run", "--model", "{root}/nope", *NOWHERE], {}, 2, "{root}/nope"),
    ("config-missing", ["run", "--model", "{model}", "--config", "{root}/none.toml"], {},
     2, "--config {root}/none.toml: cannot read it"),
    ("timeout-zero", ["run", "--model", "{model}", "--start-timeout-s", "0"], {},
     2, "--start-timeout-s 0: must be above 0"),
    ("bad-topic-name", ["run", "--model", "{model}", "--input-topic", "my topic"], {},
     2, "--input-topic my topic: not a valid name"),
    ("kafka-pair-without-value", ["run", "--model", "{model}"],
     {"SCORING_KAFKA": "security.protocol"}, 2, "SCORING_KAFKA 'security.protocol': "
     "expected KEY=VALUE"),
    ("unreadable-ca", ["run", "--model", "{model}", *NOWHERE, "--kafka",
                       "security.protocol=SSL", "--kafka", "ssl.ca.location={root}/none.pem"],
     {}, 2, "librdkafka property ssl.ca.location"),
    ("score-file-has-no-kafka-options", ["score-file", "{events}", "{root}/o.jsonl",
                                         "--kafka", "x=y"], {},
     2, "unrecognized arguments: --kafka x=y (see scoring-worker score-file --help)"),
    ("produce-demo-count-zero", ["produce-demo", "--count", "0"], {},
     2, "argument --count: 0 is out of range (1 or more)"),
    ("produce-demo-bad-bootstrap", ["produce-demo", "--bootstrap", "kafka"], {},
     2, "argument --bootstrap: 'kafka': 'kafka' has no port"),
    ("kafka-local-sasl-without-password", ["kafka-local", "start", "--sasl", "alice"], {},
     2, "--sasl: expected USER:PASSWORD"),
    ("nul-byte-in-model-name", ["models", "add", "--store", "{root}/store", "{nul}"], {},
     2, "model name 'fraud\\x00x' contains a control character"),
    ("monitor-partitions-zero", ["monitor", *NOWHERE, "--partitions", "0"], {},
     2, "--partitions 0: below the minimum 1"),
    ("unknown-command", ["serve"], {}, 2, "argument COMMAND: invalid choice: 'serve'"),
]


@pytest.mark.parametrize(("argv", "env", "status", "text"),
                         [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_line_and_the_right_exit_status(
    argv: list[str], env: dict[str, str], status: int, text: str, files: dict[str, str],
    busy_port: int, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutdown, "install", lambda: None)  # keep pytest's own Ctrl-C
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    values = {**files, "busy": str(busy_port)}
    try:
        code = cli.main([a.format(**values) for a in argv])
    except SystemExit as exc:  # argparse's own mistakes
        code = int(exc.code or 0)
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if not _is_json(ln)]
    assert code == status, err
    assert len(lines) == 1, err
    command = argv[0] if argv[0] != "serve" else ""
    assert lines[0].startswith(f"scoring-worker {command}".rstrip()), lines[0]
    assert ": error: " in lines[0] and lines[0].endswith(")"), lines[0]
    assert text.format(**values) in lines[0], lines[0]
    assert "Traceback" not in err and "(None)" not in err


def _is_json(line: str) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def test_a_traceback_only_with_log_level_debug(
    files: dict[str, str], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutdown, "install", lambda: None)
    argv = ["run", "--model", files["model"], *NOWHERE, "--metrics-port", "0"]
    assert cli.main(argv) == 1
    assert "Traceback" not in capfd.readouterr().err
    assert cli.main([*argv, "--log-level", "DEBUG"]) == 1
    assert "Traceback" in capfd.readouterr().err


def test_version_names_what_a_bug_report_needs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("scoring-worker 0.", "Python 3.", "scikit-learn ", "librdkafka "):
        assert name in out


def _help(*argv: str) -> str:
    """The help text of a command, its line wrapping undone."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        cli.build_parser().parse_args([*argv, "--help"])
    return " ".join(buf.getvalue().split())


def test_help_is_for_users_with_defaults_and_an_example() -> None:
    top = _help()
    assert "Score Kafka events with a scikit-learn model" in top
    assert "Each handler returns" not in top  # not the module's developer docstring
    for command in ("run", "score-file", "monitor", "kafka-local", "train-demo",
                    "produce-demo", "models", "demo"):
        text = _help(command)
        assert "example:" in text and f"scoring-worker {command}" in text, command
        assert "exit status:" in text, command
    run = _help("run")
    assert "default: 1000" in run and "env SCORING_BATCH_MAX" in run
    assert "--metrics-host" in run and "default: 0.0.0.0" in run
    assert "(default: 9092)" in _help("kafka-local")


def test_score_file_shows_only_its_own_options() -> None:
    text = _help("score-file")
    for own in ("--model", "--schema", "--max-event-bytes", "--config", "--log-level"):
        assert own in text, own
    for other in ("--kafka", "--bootstrap", "--batch-max", "--input-topic", "--metrics-port",
                  "--group", "--start-timeout-s"):
        assert other not in text, other
    assert "--windows" not in _help("run") and "--input-topic" not in _help("monitor")


def test_models_add_makes_the_first_version_current_and_promote_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.model.test_model_store import bundle

    store = str(tmp_path / "store")
    assert cli.main(["models", "add", "--store", store, str(bundle(tmp_path, "1"))]) == 0
    assert "the first version: now current" in capsys.readouterr().out
    assert cli.main(["models", "add", "--store", store, str(bundle(tmp_path, "2"))]) == 0
    assert cli.main(["models", "list", "--store", store]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["unit\t1\tcurrent", "unit\t2"]
    assert cli.main(["models", "add", "--store", store, "--promote",
                     str(bundle(tmp_path, "3"))]) == 0
    assert cli.main(["models", "list", "--store", store]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "unit\t3\tcurrent"
