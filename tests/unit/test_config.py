"""Settings precedence: defaults < TOML < SCORING_* env < flags; librdkafka pass-through."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import config
from worker.errors import ConfigError


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    toml = tmp_path / "w.toml"
    toml.write_text('group = "from-toml"\nbatch_max = 10\ninput_topic = "t-toml"\n'
                    '[kafka]\n"security.protocol" = "SASL_SSL"\n"linger.ms" = 7\n')  # fmt: skip
    env = {"SCORING_BATCH_MAX": "20", "SCORING_INPUT_TOPIC": "t-env",
           "SCORING_KAFKA": "linger.ms=9;sasl.mechanism=PLAIN"}  # fmt: skip
    flags = {"input_topic": "t-flag", "batch_max": None, "output_topic": None}
    s = config.load(toml, env, flags, ["sasl.username=alice"])
    assert s.group == "from-toml"  # only the file sets it
    assert s.batch_max == 20  # env beats file; the flag was not given
    assert s.input_topic == "t-flag"  # flag beats env
    assert s.output_topic == "predictions"  # default
    assert s.kafka == {"security.protocol": "SASL_SSL", "linger.ms": "9",
                       "sasl.mechanism": "PLAIN", "sasl.username": "alice"}  # fmt: skip


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_max"):
        config.load(None, {"SCORING_BATCH_MAX": "lots"}, {})
    toml = tmp_path / "w.toml"
    toml.write_text("bach_max = 3\n")
    with pytest.raises(ConfigError, match="unknown settings bach_max"):
        config.load(toml, {}, {})
    with pytest.raises(ConfigError, match="key=value"):
        config.load(None, {}, {}, ["security.protocol"])
    toml.write_text("not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(toml, {}, {})


def test_masked_hides_secrets_but_not_paths() -> None:
    s = config.Settings(kafka={"sasl.password": "hunter2", "ssl.key.password": "k",
                               "ssl.key.location": "/etc/key.pem", "linger.ms": "5",
                               "sasl.oauthbearer.client.secret": "s"})  # fmt: skip
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
