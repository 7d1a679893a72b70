"""Settings precedence: defaults < TOML < SCORING_* env < flags; librdkafka pass-through."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import config
from worker.errors import ConfigError
from worker.monitor_app.settings import MonitorSettings


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text('group = "from-toml"\nbatch_max = 10\ninput_topic = "t-toml"\n'
                    '[kafka]\n"security.protocol" = "SASL_SSL"\n"linger.ms" = 7\n')
    env = {"SCORING_BATCH_MAX": "20", "SCORING_INPUT_TOPIC": "t-env",
           "SCORING_KAFKA": "linger.ms=9;sasl.mechanism=PLAIN"}
    flags = {"input_topic": "t-flag", "batch_max": None, "output_topic": None}
    s = config.load(toml, env, flags, ["sasl.username=alice"])
    assert s.group == "from-toml"  # only the file sets it
    assert s.batch_max == 20  # env beats file; the flag was not given
    assert s.input_topic == "t-flag"  # flag beats env
    assert s.output_topic == "predictions"  # default
    assert s.kafka == {"security.protocol": "SASL_SSL", "linger.ms": "9",
                       "sasl.mechanism": "PLAIN", "sasl.username": "alice"}


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_max"):
        config.load(None, {"SCORING_BATCH_MAX": "lots"}, {})
    toml = tmp_path / "w.toml"
    toml.write_text("bach_max = 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'bach_max' \(did you mean batch_max"):
        config.load(toml, {}, {})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.load(None, {}, {}, ["security.protocol"])
    toml.write_text("not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(toml, {}, {})


def test_masked_hides_secrets_but_not_paths() -> None:
    s = config.Settings(kafka={"sasl.password": "hunter2", "ssl.key.password": "k",
                               "ssl.key.location": "/etc/key.pem", "linger.ms": "5",
                               "sasl.oauthbearer.client.secret": "s"})
    shown = s.masked()["kafka"]
    assert shown["sasl.password"] == "***"
    assert shown["ssl.key.password"] == "***"
    assert shown["sasl.oauthbearer.client.secret"] == "***"
    assert shown["ssl.key.location"] == "/etc/key.pem"
    assert shown["linger.ms"] == "5"
    assert "hunter2" not in repr(s.masked())


def test_every_setting_is_documented() -> None:
    import dataclasses

    for f in dataclasses.fields(config.Settings):
        assert f.metadata.get("doc"), f"setting {f.name} has no documentation"


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({}, {"batch_max": "0"}, "--batch-max 0: below the minimum 1"),
        ({"SCORING_BATCH_MAX": "-3"}, {}, "SCORING_BATCH_MAX='-3': below the minimum 1"),
        ({}, {"batch_wait_ms": "2.5"}, "--batch-wait-ms 2.5: not a whole number"),
        ({}, {"start_timeout_s": "0"}, "--start-timeout-s 0: must be above 0"),
        ({}, {"start_timeout_s": "nan"}, "not a finite number"),
        ({}, {"metrics_port": "70000"}, "--metrics-port 70000: above the maximum 65535"),
        ({}, {"log_level": "LOUD"}, "--log-level LOUD: not a log level"),
        ({}, {"log_format": "xml"}, "--log-format xml: not one of the choices"),
        ({}, {"bootstrap": "localhost"}, "'localhost' has no port"),
        ({}, {"bootstrap": "a:1,,b:2"}, "an empty broker address"),
        ({}, {"bootstrap": "a:99999"}, "port '99999' is not a number from 1 to 65535"),
        ({}, {"bootstrap": "::1:9092"}, "IPv6 address in brackets"),
        ({}, {"input_topic": "bad topic"}, "--input-topic bad topic: not a valid name"),
        ({"SCORING_BACH_MAX": "1"}, {}, "SCORING_BACH_MAX: unknown setting (did you mean "
                                        "SCORING_BATCH_MAX?)"),
    ],
)
def test_every_value_is_checked_and_named_by_its_source(
    env: dict[str, str], flags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(None, env, flags)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_variable_of_the_other_command_or_of_the_tests_is_not_unknown() -> None:
    from worker.monitor_app.settings import MonitorSettings

    env = {"SCORING_WINDOWS": "5m", "SCORING_TEST_KAFKA_PORT": "9092", "OTHER": "x"}
    assert config.load(None, env, {}).batch_max == 1000
    m = config.load_into(MonitorSettings, None, {"SCORING_BATCH_WAIT_MS": "50"}, {})
    assert m.batch_wait_ms == 50  # a worker's variable name the monitor also has


def test_booleans_accept_only_the_usual_words() -> None:
    from dataclasses import dataclass

    from worker.settings_rules import parse, specs

    @dataclass(frozen=True)
    class WithBool:
        allow: bool = config.setting(False, "A switch.")

    spec = specs(WithBool)["allow"]
    for text, value in (("true", True), ("YES", True), ("1", True), ("false", False),
                        ("no", False), ("0", False), (True, True)):
        assert parse(spec, text, "x") is value
    for typo in ("ture", "on", "y", "2", ""):
        with pytest.raises(ConfigError, match="not a boolean"):
            parse(spec, typo, "--allow")


def test_toml_values_are_typed_and_checked(tmp_path: Path) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text('batch_max = "ten"\n')
    with pytest.raises(ConfigError, match=r"batch_max = 'ten' in .*w.toml: not a whole number"):
        config.load(toml, {}, {})
    toml.write_text('bootstrap = 9092\n')
    with pytest.raises(ConfigError, match="not text: quote it"):
        config.load(toml, {}, {})
    toml.write_text('model = "fraud\\u0000"\n')
    with pytest.raises(ConfigError, match="control character"):
        config.load(toml, {}, {})
    toml.write_text('log_level = "debug"\n[kafka]\n"enable.idempotence" = true\n')
    s = config.load(toml, {}, {})
    assert s.log_level == "DEBUG" and s.kafka == {"enable.idempotence": "true"}


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="batch_max=0"):
        config.Settings(batch_max=0)
    from worker.monitor_app.settings import MonitorSettings

    with pytest.raises(ConfigError, match="'5x' is not a window size"):
        MonitorSettings(windows="5m,5x")


SECRET_PROPERTIES = ("sasl.password", "ssl.key.password", "ssl.keystore.password",
                     "ssl.key.pem", "ssl_key", "sasl.oauthbearer.config",
                     "sasl.oauthbearer.client.secret",
                     "sasl.oauthbearer.client.credentials.client.secret",
                     "sasl.oauthbearer.assertion.private.key.passphrase",
                     "sasl.oauthbearer.assertion.private.key.pem", "sasl.jaas.config",
                     "listener.name.secure.scram-sha-512.sasl.jaas.config")


@pytest.mark.parametrize("name", SECRET_PROPERTIES)
def test_every_secret_bearing_property_is_masked_by_name(name: str) -> None:
    assert config.is_secret(name)
    shown = config.Settings(kafka={name: "s3cr3t-value"}).masked()
    assert "s3cr3t-value" not in repr(shown)


def test_paths_and_plain_properties_are_not_secrets() -> None:
    for name in ("ssl.key.location", "ssl.ca.location", "sasl.username", "linger.ms",
                 "security.protocol", "sasl.mechanism"):
        assert not config.is_secret(name), name


def test_typed_values_enums_windows_and_internal_topics() -> None:
    from worker.delivery_terms import Guarantee
    from worker.monitor_app.settings import MonitorSettings
    from worker.settings_common import LogFormat

    s = config.load(None, {"SCORING_GUARANTEE": "exactly-once"}, {"log_format": "text"})
    assert s.guarantee is Guarantee.EXACTLY_ONCE and s.log_format is LogFormat.TEXT
    assert config.Settings().guarantee is Guarantee.AT_LEAST_ONCE  # the default is typed too
    with pytest.raises(ConfigError, match=r"--guarantee once: not one of the choices \("
                       "guarantee: one of at-least-once, exactly-once"):
        config.load(None, {}, {"guarantee": "once"})
    m = MonitorSettings(windows=" 30s,1h ", group="g")
    assert [(w.name, w.ms) for w in m.window_sizes] == [("30s", 30_000), ("1h", 3_600_000)]
    assert m.window_list == ["30s", "1h"] and m.windows == " 30s,1h "  # the text as given
    assert (m.internal.join, m.internal.partials, m.internal.join_state,
            m.internal.global_state) == ("g-join", "g-partials", "g-join-changelog",
                                         "g-global-changelog")


def test_settings_catalog_lists_exactly_each_commands_setting_flags() -> None:
    import argparse

    from worker.cli import build_parser
    from worker.settings_catalog import COMMANDS, command_settings

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in COMMANDS:
        group = next(g for g in sub.choices[command]._action_groups if g.title == "settings")
        flags = [a.option_strings[0] for a in group._group_actions]
        specs = command_settings(command)
        assert flags == [s.flag for s in specs], command
        assert all(s.doc and s.value_type in (int, float, str, bool) for s in specs), command
    # A shared setting is one declaration: the same rule wherever a command has it.
    shared = [{s.name: s for s in command_settings(c)}["allow_pickle"].rule.doc
              for c in ("run", "monitor", "retrain")]
    assert all("prefer .skops bundles" in doc for doc in shared)


def test_the_monitor_state_defaults_under_xdg_state_home(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert MonitorSettings().state_dir == str(tmp_path / "state" / "scoring-monitor")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    want = tmp_path / "home" / ".local" / "state" / "scoring-monitor"
    assert MonitorSettings().state_dir == str(want)
