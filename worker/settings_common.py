"""Settings more than one command has, each declared once: its type, default, range and prose.

A command's settings class composes these (``log_level: str = log_level_setting()``), so the
worker, the monitor and retrain cannot drift apart on a shared setting's rule or wording;
what differs by command (a default, the sentence that says what the setting is *for* in
that command) is an argument. ``LogFormat`` lives here too; ``Guarantee`` lives below every
layer that reads it, in worker/delivery_terms.py.
"""

from __future__ import annotations

import os
import socket
from dataclasses import field
from enum import StrEnum
from pathlib import Path
from typing import Any

from worker.delivery_terms import MAX_EVENT_BYTES_DEFAULT
from worker.settings_rules import HOST_PORTS, host_port_list, log_level, not_empty, setting


class LogFormat(StrEnum):
    """How log lines are written on stderr (``--log-format``)."""

    JSON = "json"
    TEXT = "text"


def state_home() -> Path:
    """Where a user's programs keep state that outlives a run: ``$XDG_STATE_HOME``, by
    default ~/.local/state (the XDG base directory rules)."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


def bootstrap_setting() -> Any:
    return setting("127.0.0.1:9092", "Kafka bootstrap servers; any one answering is enough.",
                   check=host_port_list, allowed=HOST_PORTS)


def kafka_setting() -> Any:
    return field(default_factory=dict, metadata={
        "doc": "librdkafka properties for every client (TLS, SASL, tuning)."})


def log_level_setting(default: str = "INFO") -> Any:
    return setting(default, "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL; DEBUG also "
                   "prints the traceback of an unexpected error.", check=log_level,
                   allowed="DEBUG, INFO, WARNING, ERROR or CRITICAL", batch=True)


def log_format_setting() -> Any:
    return setting(LogFormat.JSON, "Log lines on stderr: json (one object per line, for log "
                   "collectors) or text (for a terminal).", batch=True)


def metrics_host_setting() -> Any:
    return setting("0.0.0.0", "Address the /metrics, /healthz and /readyz server binds: "
                   "0.0.0.0 (every interface) for containers, whose probes and scrapers "
                   "come from outside; 127.0.0.1 on a laptop or a shared host.",
                   check=not_empty)


def metrics_port_setting(default: int) -> Any:
    return setting(default, "Port of /metrics, /healthz and /readyz; 0 turns the HTTP "
                   "server off.", ge=0, le=65535)


def allow_pickle_setting(what: str, *, batch: bool = False) -> Any:
    """``what``: the sentence saying which bundles this command loads (or writes) as .joblib."""
    return setting(False, f"{what} Unpickling runs any code the file holds, and a bundle's "
                   "sha256 sits beside it, so it only detects corruption, not tampering; "
                   "prefer .skops bundles, which load without running code.",
                   batch=batch)


def instance_id_setting(what: str) -> Any:
    """``what``: what this command's instance id names and why it must be stable."""
    return setting(None, f"{what} Default: the host name.", factory=socket.gethostname,
                   check=not_empty)


def start_timeout_setting(also: str = "") -> Any:
    """``also``: a sentence naming what else this command waits for at start."""
    text = "Seconds to wait for the broker at start before giving up (exit 1)."
    return setting(30.0, f"{text} {also}".strip(), gt=0, le=86_400)


def health_stall_setting(default: float) -> Any:
    return setting(default, "Seconds without a loop turn after which /healthz reports "
                   "unhealthy.", gt=0, le=86_400)


def max_event_bytes_setting(doc: str, *, batch: bool = False) -> Any:
    """The worker dead-letters larger events; retrain skips them, by the same bound."""
    return setting(MAX_EVENT_BYTES_DEFAULT, doc, ge=1, le=1_000_000_000, batch=batch)


def static_membership_setting() -> Any:
    return setting(True, "Join the consumer group as a static member named by instance_id "
                   "(group.instance.id, KIP-345): a process restarted under the same id takes "
                   "its partitions back at once, without a rebalance, and a second live "
                   "process with that id is refused (exit 1). A static member does not leave "
                   "the group when it stops: its partitions wait session_timeout_s unless it "
                   "comes back under the same id. false: a dynamic member, which hands its "
                   "partitions over at once on SIGTERM but whose crash costs "
                   "session_timeout_s.")


def session_timeout_setting(default: float = 10.0) -> Any:
    return setting(default, "Seconds the group waits for a member that went silent (killed, "
                   "cut off) before its partitions go to the others; a static member that "
                   "stopped and did not come back under its id waits this long too. Lower: "
                   "faster failover; too low: a network or broker pause longer than this "
                   "drops a healthy member and costs two rebalances. 6 to 1800, the broker's "
                   "default bounds (group.min/max.session.timeout.ms). The heartbeat is a "
                   "third of it, at most 3 s.", ge=6, le=1800)


def mlflow_tracking_uri_setting() -> Any:
    return setting(
        "",
        "MLflow tracking server of a models:/ --model, for example http://mlflow:5000 "
        "(user:password@ in it is masked in logs); empty: the MLFLOW_TRACKING_URI "
        "variable, else MLflow's own default.",
    )


def mlflow_cache_setting() -> Any:
    return setting(
        "~/.cache/scoring-worker/mlflow",
        "Folder where MLflow model versions become bundles (<name>/<version>), kept for "
        "the next start.",
        check=not_empty,
    )


def tracing_setting(what: str) -> Any:
    """``what``: the spans this command makes and what carries their context."""
    return setting(False, f"OpenTelemetry: {what} Exporter and sampler through the standard "
                   "OTEL_* variables of the SDK you install. Needs scoring-worker[otel]; "
                   "false: nothing of OpenTelemetry is imported.")
