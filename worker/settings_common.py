"""Settings more than one command has, each declared once: its type, default, range and prose.

A command's settings class composes these (``log_level: str = log_level_setting()``), so the
worker, the monitor and retrain cannot drift apart on a shared setting's rule or wording;
what differs by command (a default, the sentence that says what the setting is *for* in
that command) is an argument. ``LogFormat`` lives here too; ``Guarantee`` lives below every
layer that reads it, in worker/delivery_terms.py.
"""

from __future__ import annotations

import socket
from dataclasses import field
from enum import StrEnum
from typing import Any

from worker.delivery_terms import MAX_EVENT_BYTES_DEFAULT
from worker.settings_rules import HOST_PORTS, host_port_list, log_level, not_empty, setting


class LogFormat(StrEnum):
    """How log lines are written on stderr (``--log-format``)."""

    JSON = "json"
    TEXT = "text"


def bootstrap_setting() -> Any:
    return setting("127.0.0.1:9092", "Kafka bootstrap servers; any one answering is enough.",
                   check=host_port_list, allowed=HOST_PORTS)  # fmt: skip


def kafka_setting() -> Any:
    return field(default_factory=dict, metadata={
        "doc": "librdkafka properties for every client (TLS, SASL, tuning)."})  # fmt: skip


def log_level_setting(default: str = "INFO") -> Any:
    return setting(default, "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL; DEBUG also "
                   "prints the traceback of an unexpected error.", check=log_level,
                   allowed="DEBUG, INFO, WARNING, ERROR or CRITICAL", batch=True)  # fmt: skip


def log_format_setting() -> Any:
    return setting(LogFormat.JSON, "Log lines on stderr: json (one object per line, for log "
                   "collectors) or text (for a terminal).", batch=True)  # fmt: skip


def metrics_host_setting() -> Any:
    return setting("0.0.0.0", "Address the /metrics, /healthz and /readyz server binds: "
                   "0.0.0.0 (every interface) for containers, whose probes and scrapers "
                   "come from outside; 127.0.0.1 on a laptop or a shared host.",
                   check=not_empty)  # fmt: skip


def metrics_port_setting(default: int) -> Any:
    return setting(default, "Port of /metrics, /healthz and /readyz; 0 turns the HTTP "
                   "server off.", ge=0, le=65535)  # fmt: skip


def allow_pickle_setting(what: str, *, batch: bool = False) -> Any:
    """``what``: the sentence saying which bundles this command loads (or writes) as .joblib."""
    return setting(False, f"{what} Unpickling runs any code the file holds, and a bundle's "
                   "sha256 sits beside it, so it only detects corruption, not tampering; "
                   "prefer .skops bundles, which load without running code.",
                   batch=batch)  # fmt: skip


def instance_id_setting(what: str) -> Any:
    """``what``: what this command's instance id names and why it must be stable."""
    return setting(None, f"{what} Default: the host name.", factory=socket.gethostname,
                   check=not_empty)  # fmt: skip


def start_timeout_setting() -> Any:
    return setting(30.0, "Seconds to wait for the broker at start before giving up (exit 1).",
                   gt=0, le=86_400)  # fmt: skip


def health_stall_setting(default: float) -> Any:
    return setting(default, "Seconds without a loop turn after which /healthz reports "
                   "unhealthy.", gt=0, le=86_400)  # fmt: skip


def max_event_bytes_setting(doc: str, *, batch: bool = False) -> Any:
    """The worker dead-letters larger events; retrain skips them, by the same bound."""
    return setting(MAX_EVENT_BYTES_DEFAULT, doc, ge=1, le=1_000_000_000, batch=batch)
