"""``models:/NAME@ALIAS`` and ``models:/NAME/VERSION``: what ``--model`` names in an MLflow
model registry, and tracking URIs with their credentials hidden.

Pure and free of MLflow itself: the CLI, the settings and the logs use it whether or not
the ``mlflow`` extra is installed (worker/model/mlflow_source.py is what imports MLflow).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from worker.errors import ConfigError

PREFIX: Final = "models:/"
EXTRA_MISSING: Final = (
    "--model {model}: serving from MLflow needs the mlflow extra "
    "(pip install 'scoring-worker[mlflow]')"
)
#: Variables through which MLflow's client takes credentials (redacted from logs).
SECRET_VARIABLES: Final = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
_NAME: Final = r"[^/@\s]+"
_ALIAS: Final = re.compile(rf"^models:/(?P<name>{_NAME})@(?P<alias>[A-Za-z0-9_\-]+)$")
_VERSION: Final = re.compile(rf"^models:/(?P<name>{_NAME})/(?P<version>[1-9][0-9]*)$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A registered model and either an alias to follow or a fixed version."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"{PREFIX}{self.name}@{self.alias}" if self.alias else self.version_uri(
            self.version or "")

    def version_uri(self, version: str) -> str:
        return f"{PREFIX}{self.name}/{version}"


def is_mlflow_model(model: str) -> bool:
    return model.startswith(PREFIX)


def parse_ref(model: str) -> ModelRef:
    """``models:/fraud@champion`` or ``models:/fraud/3``; raises ConfigError (one line)."""
    if m := _ALIAS.match(model):
        return ModelRef(m["name"], alias=m["alias"])
    if m := _VERSION.match(model):
        return ModelRef(m["name"], version=m["version"])
    raise ConfigError(f"--model {model}: expected models:/NAME@ALIAS or models:/NAME/VERSION "
                      "(a version is a positive number)")


def uri_password(uri: str) -> str | None:
    """The password (or token) written into a tracking URI ``https://user:pw@host``."""
    try:
        return urlsplit(uri).password or None
    except ValueError:
        return None


def masked_uri(uri: str) -> str:
    """``https://user:***@host/`` for ``https://user:pw@host/``; other URIs as they are."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "***"
    if not parts.password:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_mlflow_installed(model: str) -> None:
    """Raises ConfigError naming the extra when MLflow cannot be imported (only asked
    when ``--model`` is models:/..., so other workers never import it)."""
    try:
        importlib.import_module("mlflow")
    except ImportError:
        raise ConfigError(EXTRA_MISSING.format(model=model)) from None


def mlflow_secrets(tracking_uri: str, env: Mapping[str, str]) -> list[str]:
    """Values to redact from every log line: the password of the tracking URI (the setting
    or MLFLOW_TRACKING_URI) and MLflow's credential variables."""
    uris = (tracking_uri, env.get("MLFLOW_TRACKING_URI", ""))
    found = [p for p in (uri_password(u) for u in uris if u) if p]
    return found + [env[v] for v in SECRET_VARIABLES if env.get(v)]
