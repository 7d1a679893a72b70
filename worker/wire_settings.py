"""Settings of the wire formats (Avro, Protobuf, JSON Schema) and their schema registry:
declared once. The registry's settings (``RegistrySettings``) are shared by every command
that reads or writes a wire format: the worker (``WireFormatSettings``: its input and its
predictions, worker/config.py ``Settings``), ``retrain`` (``EventFormatSettings``: the
events) and the monitor (``PredictionFormatSettings``: the predictions).

The registry's credentials and TLS files follow Confluent's client: HTTP basic
authentication, a CA file, a client certificate and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from worker.errors import ConfigError
from worker.settings_rules import optional_http_urls, setting

#: Settings that hold a secret: masked in logs like librdkafka's secret properties.
SECRET_SETTINGS: Final = frozenset({"schema_registry_password"})


class InputFormat(StrEnum):
    """What the input topic's values are (``--input-format``): a decoder's name
    (worker/core/decoders/)."""

    JSON = "json"
    AVRO = "avro"
    PROTOBUF = "protobuf"
    JSON_SCHEMA = "json-schema"
    AUTO = "auto"


class OutputFormat(StrEnum):
    """What the worker writes its predictions as (``--output-format``): an encoder's name
    (worker/core/encoders/)."""

    JSON = "json"
    AVRO = "avro"


@dataclass(frozen=True)
class RegistrySettings:
    """Where the schemas are, and how to reach the registry."""

    schema_registry: str = setting(
        "",
        "URL of the schema registry's Confluent-compatible API (Apicurio: "
        "http://host:8080/apis/ccompat/v7), several separated by commas; needed by the "
        "wire formats (--input-format, --output-format, --prediction-format). Empty: none.",
        check=optional_http_urls, allowed="empty, or http:// or https:// URLs",
    )
    schema_registry_user: str = setting(
        "", "User name for the schema registry's HTTP basic authentication; empty: none.")
    schema_registry_password: str = setting(
        "", "Password of schema_registry_user (masked in logs; prefer "
        "SCORING_SCHEMA_REGISTRY_PASSWORD from a secret to a flag).")
    schema_registry_ca: str = setting(
        "", "CA certificate file (PEM) the registry's TLS certificate is checked against; "
        "empty: the system's CAs.")
    schema_registry_cert: str = setting(
        "", "Client certificate file (PEM) for a registry that asks for one (mutual TLS).")
    schema_registry_key: str = setting(
        "", "Private key file (PEM) of schema_registry_cert.")
    schema_registry_timeout_s: float = setting(
        5.0, "Seconds one schema lookup may take before the registry counts as not "
        "answering.", gt=0, le=300,
    )
    schema_registry_backoff_max_s: float = setting(
        5.0,
        "Longest wait between two lookups while the registry does not answer (the wait "
        "doubles from 0.2 s); the batch in hand waits, nothing is dead-lettered.",
        ge=0.2, le=3600,
    )


_INPUT_DOC = ("json (JSON objects), avro, protobuf or json-schema (the Confluent wire format: "
              "a magic byte, the schema id, the payload; schemas from --schema-registry), or "
              "auto (the first byte tells the wire format from JSON). The wire formats need "
              "scoring-worker[registry].")


@dataclass(frozen=True)
class EventFormatSettings(RegistrySettings):
    """What the events topic carries (the worker's input; what ``retrain`` reads)."""

    input_format: InputFormat = setting(
        InputFormat.JSON, "What the input topic's values are: " + _INPUT_DOC)


@dataclass(frozen=True)
class WireFormatSettings(EventFormatSettings):
    """The worker's formats: its input, and its predictions."""

    output_format: OutputFormat = setting(
        OutputFormat.JSON,
        "What the predictions are written as: json (schemas/prediction.schema.json), or "
        "avro (schemas/prediction.avsc in the Confluent wire format, registered under "
        "<topic>-value in --schema-registry at start; the shadow topic too). Dead letters "
        "keep their original bytes; alerts and feature statistics stay JSON. avro needs "
        "scoring-worker[registry].",
    )


@dataclass(frozen=True)
class PredictionFormatSettings(RegistrySettings):
    """What the predictions topic carries (what the monitor reads)."""

    prediction_format: InputFormat = setting(
        InputFormat.JSON,
        "What the predictions topic's values are (the workers' --output-format): "
        + _INPUT_DOC)


def require_registry(flag: str, wire_format: str, registry: str) -> None:
    """One line when a wire format is asked for without the registry that holds its
    schemas (``flag``: the setting naming the format, as a flag)."""
    if not registry:
        raise ConfigError(f"{flag} {wire_format} needs --schema-registry URL (the registry's "
                          "Confluent-compatible API)")
