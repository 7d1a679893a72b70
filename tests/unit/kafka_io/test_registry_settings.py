"""The registry's settings reach confluent_kafka's SchemaRegistryClient (basic
authentication, the TLS files, the timeout, no retries of its own), from every command that
has them, and the password is masked wherever settings are shown."""

from __future__ import annotations

import pytest

from worker import config
from worker.kafka_io.registry import RegistryConnection, SchemaSource, connection_of
from worker.monitor_app.settings import MonitorSettings
from worker.retrain.settings import RetrainSettings

REGISTRY = {"schema_registry": "https://r.example:8443/apis/ccompat/v7",
            "schema_registry_user": "svc", "schema_registry_password": "hunter2",
            "schema_registry_ca": "/etc/r/ca.pem", "schema_registry_cert": "/etc/r/c.pem",
            "schema_registry_key": "/etc/r/c.key", "schema_registry_timeout_s": 2.5}


@pytest.mark.parametrize("cls", [config.Settings, MonitorSettings, RetrainSettings])
def test_every_command_passes_its_registry_settings_to_the_client(cls: type) -> None:
    s = cls(**REGISTRY)
    conf = connection_of(s).client_config()
    assert conf == {"url": REGISTRY["schema_registry"], "timeout": 2.5, "max.retries": 0,
                    "basic.auth.user.info": "svc:hunter2",
                    "ssl.ca.location": "/etc/r/ca.pem",
                    "ssl.certificate.location": "/etc/r/c.pem",
                    "ssl.key.location": "/etc/r/c.key"}
    shown = s.masked()
    assert shown["schema_registry_password"] == "***" and "hunter2" not in repr(shown)
    assert shown["schema_registry_user"] == "svc"


def test_the_client_authenticates_with_the_user_and_password() -> None:
    # No TLS files here (the client loads them at once); test_wire_outputs.py has a registry
    # behind basic authentication and mutual TLS.
    source = SchemaSource(RegistryConnection("https://r.example/apis/ccompat/v7", "svc",
                                             "hunter2", timeout_s=2.5))
    rest = source._client._rest_client
    assert rest.auth == ("svc", "hunter2")
    assert rest.timeout == 2.5 and rest.max_retries == 0
    anonymous = SchemaSource(RegistryConnection("http://r"))
    assert anonymous._client._rest_client.auth is None
