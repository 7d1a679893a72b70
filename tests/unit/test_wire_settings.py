"""The wire formats' settings: declared with their rules, the registry's password masked, and a
wire format without a registry refused."""

from __future__ import annotations

import pytest

from worker import config
from worker.errors import ConfigError
from worker.probes import Health
from worker.stream import schema_gate


def test_the_registry_password_is_masked_and_the_user_is_not() -> None:
    s = config.Settings(schema_registry="https://r:8081", schema_registry_user="svc",
                        schema_registry_password="hunter2")
    shown = s.masked()
    assert shown["schema_registry_password"] == "***" and shown["schema_registry_user"] == "svc"
    assert "hunter2" not in repr(shown)
    assert config.Settings().masked()["schema_registry_password"] == ""


@pytest.mark.parametrize(("env", "message"), [
    ({"SCORING_INPUT_FORMAT": "xml"}, "one of json, avro, protobuf, json-schema, auto"),
    ({"SCORING_SCHEMA_REGISTRY": "registry:8081"}, "is not an http:// or https:// URL"),
    ({"SCORING_SCHEMA_REGISTRY_TIMEOUT_S": "0"}, "above 0"),
    ({"SCORING_SCHEMA_REGISTRY_BACKOFF_MAX_S": "0.1"}, "0.2 to 3600"),
])
def test_values_out_of_range_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(None, env, {})


def test_several_registry_urls_are_accepted() -> None:
    s = config.load(None, {"SCORING_SCHEMA_REGISTRY": "http://a:8081, https://b/apis/ccompat/v7"},
                    {})
    assert s.schema_registry == "http://a:8081, https://b/apis/ccompat/v7"


def test_a_wire_format_needs_a_registry() -> None:
    from worker.core import decoders

    s = config.Settings(input_format="avro")
    with pytest.raises(ConfigError, match="--input-format avro needs --schema-registry URL"):
        schema_gate.build(s, decoders.get("avro"), Health(stall_s=30))
    assert schema_gate.build(s, decoders.get("json"), Health(stall_s=30)) is None

