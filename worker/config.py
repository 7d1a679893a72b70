"""One typed settings object for the worker.

Precedence, lowest first: the defaults below < a TOML file (``--config``) <
``SCORING_<NAME>`` environment variables < command-line flags. librdkafka
properties pass through unchanged from a ``[kafka]`` table, ``SCORING_KAFKA``
(``key=value`` pairs separated by ``;``) or repeated ``--kafka key=value``
flags, in that same order, and apply to both the consumer and the producer.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from worker.errors import ConfigError

T = TypeVar("T")
SECRET_MARKERS = ("password", "secret", "token", "key", "credential")


def setting(default: Any, doc: str) -> Any:
    """A settings field with its documentation, which also becomes the flag's help."""
    return field(default=default, metadata={"doc": doc})


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Worker settings; every field is also ``SCORING_<FIELD>`` and ``--<field>``."""

    bootstrap: str = setting(
        "127.0.0.1:9092", "Kafka bootstrap servers, ``host:port[,host:port]``."
    )
    input_topic: str = setting("transactions", "Topic of the events to score.")
    output_topic: str = setting(
        "predictions", "Topic the predictions go to, keyed like their input event."
    )
    dlq_topic: str = setting(
        "transactions-dlq",
        "Topic of dead letters: original key and value, error details in headers.",
    )
    group: str = setting(
        "scoring-worker", "Consumer group; workers in one group share the input's partitions."
    )
    model: str = setting(
        "",
        "Model bundle: its folder or its model.json; or a model store folder STORE/<name> "
        "(it has a ``current`` file), whose pointer the worker then follows (hot reload).",
    )
    model_poll_ms: int = setting(
        1000,
        "How often a worker serving a store folder checks its ``current`` pointer (and "
        "the control topic) for a new version, in milliseconds.",
    )
    control_topic: str = setting(
        "",
        "Compacted topic of model promotions, records {name, version}: a record for this "
        "worker's model makes it serve that stored version (read from the beginning, so "
        "the latest record wins); empty: off. Needs --model to be a store folder.",
    )
    alerts_topic: str = setting(
        "model-alerts",
        "Topic where a refused model reload is announced (schemas/model_refusal.schema.json).",
    )
    shadow_model: str = setting(
        "",
        "Optional second model bundle that scores every batch too, for comparison: its "
        "predictions go to ``shadow_topic`` only and never change the main output; empty: off.",
    )
    shadow_topic: str = setting(
        "predictions-shadow", "Topic of the shadow model's predictions (same record format)."
    )
    schema: str = setting(
        "",
        "Optional JSON Schema every event must satisfy; without it events must be JSON "
        "objects with a string ``id`` and every model feature a finite number.",
    )
    batch_max: int = setting(
        1000,
        "Most events scored in one batch (one model call), 1-1,000,000. A batch is what "
        "is already buffered, so batches grow by themselves under load.",
    )
    batch_wait_ms: int = setting(
        20,
        "When no event is buffered, the longest wait for the next one, in milliseconds "
        "(1-60,000); events in hand are never held back to fill a batch.",
    )
    guarantee: str = setting(
        "at-least-once",
        "at-least-once (a crash can repeat outputs, never lose them) or exactly-once (each "
        "batch's outputs and input offsets commit in one Kafka transaction; downstream "
        "consumers must read with isolation.level=read_committed).",
    )
    instance_id: str = setting(
        socket.gethostname(),
        "Stable name of this worker instance, unique among the running workers of the "
        "group (exactly-once: the transactional id is <group>-<instance_id>, so a "
        "restarted worker fences its killed predecessor). Default: the host name.",
    )
    max_in_flight: int = setting(
        5_000,
        "Most events whose outputs wait for the broker (at-least-once: acknowledgement; "
        "exactly-once: the transaction's commit), 1-1,000,000. At the bound the loop stops "
        "reading and waits, so memory stays flat under a backlog (about 1.5 KiB per event "
        "in flight; 5,000 is a tenth of a second at full speed).",
    )
    commit_interval_ms: int = setting(
        200,
        "How often (0-3,600,000 ms) offsets are committed: at-least-once, those of every "
        "event whose outputs the broker acknowledged, without waiting; exactly-once, the "
        "open transaction (its length). Also when the input goes quiet. Larger: cheaper, "
        "more repeated outputs after a crash (at-least-once), later visible outputs "
        "(exactly-once).",
    )
    metrics_port: int = setting(
        8000, "Port of /metrics, /healthz and /readyz; 0 turns the HTTP server off."
    )
    stats_interval_ms: int = setting(
        5000,
        "How often librdkafka's lag, round trips and queues update /metrics; 0: never. "
        "(Readiness follows the broker connection every second regardless.)",
    )
    max_event_bytes: int = setting(
        983_040,
        "Events larger than this many bytes (1-1,000,000,000) are dead-lettered unread. "
        "The default (960 KiB) leaves 16 KiB below the producer's message.max.bytes "
        "(1,000,000) for the dead letter's key and headers; the worker refuses to start "
        "when the output topics or the producer accept less than this plus 16 KiB.",
    )
    event_ts_field: str = setting(
        "ts", "Event field holding the event time (epoch ms), copied to ``event_ts``."
    )
    label_field: str = setting(
        "",
        "Event field holding the event's own true label (replays, backtests), copied to "
        "the prediction as true_label; empty: off.",
    )
    worker_id: str = field(
        default_factory=_default_worker_id,
        metadata={"doc": "Identifies this process in dead letters and logs."},
    )
    start_timeout_s: float = setting(
        30.0, "Seconds to wait for the broker at start before giving up (exit non-zero)."
    )
    flush_timeout_s: float = setting(
        30.0,
        "Seconds (> 0) between warnings while outputs wait for the broker; also the longest "
        "a rebalance or a shutdown waits for them before leaving their events to be read "
        "again (at-least-once) or aborting (exactly-once).",
    )
    health_stall_s: float = setting(
        30.0, "Seconds without a loop turn after which /healthz reports unhealthy."
    )
    log_level: str = setting("INFO", "Python logging level.")
    kafka: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"doc": "librdkafka properties for both clients (TLS, SASL, tuning)."},
    )

    def masked(self) -> dict[str, Any]:
        return masked(self)


def masked(settings: Any) -> dict[str, Any]:
    """Settings (a dataclass with a ``kafka`` mapping) as a dict for logs, with
    secret-looking librdkafka values hidden."""
    out = dataclasses.asdict(settings)
    out["kafka"] = {k: ("***" if is_secret(k) else v) for k, v in settings.kafka.items()}
    return out


def is_secret(key: str) -> bool:
    k = key.lower()
    return any(m in k for m in SECRET_MARKERS) and not k.endswith(".location")


def _fields(cls: type[Any]) -> dict[str, Any]:
    return {f.name: f for f in fields(cls)}


def _coerce(cls: type[Any], name: str, raw: Any) -> Any:
    """Convert a TOML, env or flag value to the field's type, naming the field on failure."""
    default = _fields(cls)[name].default
    kind = type(default) if default is not dataclasses.MISSING else str
    try:
        if kind is bool:
            return str(raw).lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {raw!r} as {kind.__name__}") from exc


def parse_kafka_pairs(pairs: list[str] | str, source: str) -> dict[str, str]:
    """``key=value`` items (a list, or a ``;``-separated string) -> dict."""
    items = pairs.split(";") if isinstance(pairs, str) else pairs
    out: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def from_toml(path: Path, cls: type[Any] = Settings,
              tables: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """Settings and the [kafka] table of a TOML file; ``tables`` are other tables the
    caller reads itself (the monitor's [[alerts]])."""
    data = read_toml(path)
    kafka = {str(k): str(v) for k, v in data.pop("kafka", {}).items()}
    for name in tables:
        data.pop(name, None)
    unknown = sorted(set(data) - set(_fields(cls)))
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {', '.join(unknown)}")
    return data, kafka


def from_env(env: Mapping[str, str], cls: type[Any] = Settings
             ) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    values = {n: env[f"SCORING_{n.upper()}"] for n in _fields(cls)
              if n != "kafka" and f"SCORING_{n.upper()}" in env}  # fmt: skip
    kafka = parse_kafka_pairs(env.get("SCORING_KAFKA", ""), "SCORING_KAFKA")
    return values, kafka


def load(
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    kafka_flags: list[str] | None = None,
) -> Settings:
    """The worker's settings from every source; flags whose value is None were not given."""
    return load_into(Settings, config_file, env, flags, kafka_flags)


def load_into(
    cls: type[T],
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    kafka_flags: list[str] | None = None,
    tables: tuple[str, ...] = (),
) -> T:
    """Merge every source by precedence into ``cls``, a settings dataclass with a
    ``kafka`` mapping field."""
    names = _fields(cls)
    merged: dict[str, Any] = {}
    kafka: dict[str, str] = {}
    layers = [from_toml(config_file, cls, tables)] if config_file else []
    layers.append(from_env(env, cls))
    layers.append(({k: v for k, v in flags.items()
                    if v is not None and k in names and k != "kafka"},
                   parse_kafka_pairs(kafka_flags or [], "--kafka")))  # fmt: skip
    for values, kafka_values in layers:
        merged.update({k: _coerce(cls, k, v) for k, v in values.items()})
        kafka.update(kafka_values)
    return cls(**merged, kafka=kafka)  # type: ignore[call-arg]
