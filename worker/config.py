"""One typed settings object for the worker, and the loader every command shares.

Precedence, lowest first: the defaults below < a TOML file (``--config``) <
``SCORING_<NAME>`` environment variables < command-line flags. librdkafka
properties pass through from a ``[kafka]`` table, ``SCORING_KAFKA``
(``key=value`` pairs separated by ``;``) or repeated ``--kafka key=value``
flags, in that same order, and apply to every client.

Every value is checked where its setting is declared (``setting(...)``, see
settings_rules.py), whatever its source; an unknown TOML key or ``SCORING_*``
variable is refused by name. A ``SCORING_*`` variable of another command (the
monitor's ``SCORING_WINDOWS`` seen by ``run``) is not unknown: containers often
share one environment. ``SCORING_TEST_*`` belongs to the test suite.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from worker.delivery_terms import Guarantee
from worker.errors import ConfigError
from worker.settings_common import (
    LogFormat,
    allow_pickle_setting,
    bootstrap_setting,
    health_stall_setting,
    instance_id_setting,
    kafka_setting,
    log_format_setting,
    log_level_setting,
    max_event_bytes_setting,
    metrics_host_setting,
    metrics_port_setting,
    start_timeout_setting,
)
from worker.settings_rules import not_empty, optional_topic, parse, setting, specs, topic, validate

T = TypeVar("T")
#: Property names of librdkafka that carry a secret (or may: a JAAS or OAuth config).
SECRET_MARKERS: Final = ("password", "secret", "token", "key", "credential", "passphrase",
                         "jaas", "oauthbearer.config")  # fmt: skip
#: Settings classes whose ``SCORING_*`` variables are known (``register``).
_REGISTERED: list[type[Any]] = []

__all__ = ["masked", "setting", "validate"]


def register(cls: type[T]) -> type[T]:
    """Class decorator of a settings class: its variables become known to every command."""
    _REGISTERED.append(cls)
    return cls


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@register
@dataclass(frozen=True)
class Settings:
    """Worker settings; every field is also ``SCORING_<FIELD>`` and ``--<field>``."""

    bootstrap: str = bootstrap_setting()
    input_topic: str = setting("transactions", "Topic of the events to score.", check=topic)
    output_topic: str = setting(
        "predictions", "Topic the predictions go to, keyed like their input event.", check=topic
    )
    dlq_topic: str = setting(
        "transactions-dlq",
        "Topic of dead letters: original key and value, error details in headers.",
        check=topic,
    )
    group: str = setting(
        "scoring-worker", "Consumer group; workers in one group share the input's partitions.",
        check=not_empty,
    )
    model: str = setting(
        "",
        "Model bundle: its folder or its model.json; or a model store folder STORE/<name> "
        "(it has a ``current`` file), whose pointer the worker then follows (hot reload).",
        batch=True,
    )
    allow_pickle: bool = allow_pickle_setting("Load .joblib (pickle) model bundles.", batch=True)
    model_threads: int = setting(
        1,
        "Threads the model's own pools may use, per worker process: OpenMP and BLAS "
        "(HistGradientBoosting, LightGBM, XGBoost, linear models), n_jobs of forests, "
        "LightGBM and XGBoost, onnxruntime's intra-op pool. 1 suits a stream of small "
        "batches: a pool costs more to wake than it saves and takes the cores librdkafka "
        "needs; use more processes for more cores. Raise it for large batches of a heavy "
        "model on cores nothing else uses (score-file, a backlog on a dedicated node).",
        ge=1, le=256, batch=True,
    )
    model_poll_ms: int = setting(
        1000,
        "How often a worker serving a store folder checks its ``current`` pointer (and "
        "the control topic) for a new version, in milliseconds.",
        ge=10, le=3_600_000,
    )
    control_topic: str = setting(
        "",
        "Compacted topic of model promotions, records {name, version}: a record for this "
        "worker's model makes it serve that stored version (read from the beginning, so "
        "the latest record wins); empty: off. Needs --model to be a store folder.",
        check=optional_topic,
    )
    alerts_topic: str = setting(
        "model-alerts",
        "Topic where a refused model reload is announced (schemas/model_refusal.schema.json).",
        check=topic,
    )
    shadow_model: str = setting(
        "",
        "Optional second model bundle that scores every batch too, for comparison: its "
        "predictions go to ``shadow_topic`` only and never change the main output; empty: off.",
    )
    shadow_topic: str = setting(
        "predictions-shadow", "Topic of the shadow model's predictions (same record format).",
        check=topic,
    )
    schema: str = setting(
        "",
        "Optional JSON Schema every event must satisfy; without it events must be JSON "
        "objects with a string ``id`` and every model feature a finite number.",
        batch=True,
    )
    batch_max: int = setting(
        1000,
        "Most events scored in one batch (one model call). A batch is what is already "
        "buffered, so batches grow by themselves under load and shrink to one event when "
        "traffic is light.",
        ge=1, le=1_000_000,
    )
    batch_wait_ms: int = setting(
        20,
        "When no event is buffered, the longest wait for the next one, in milliseconds; "
        "events in hand are never held back to fill a batch.",
        ge=1, le=60_000,
    )
    guarantee: Guarantee = setting(
        Guarantee.AT_LEAST_ONCE,
        "at-least-once (a crash can repeat outputs, never lose them) or exactly-once (each "
        "batch's outputs and input offsets commit in one Kafka transaction; downstream "
        "consumers must read with isolation.level=read_committed).",
    )
    instance_id: str = instance_id_setting(
        "Stable name of this worker instance, unique among the running workers of the "
        "group (exactly-once: the transactional id is <group>-<instance_id>, so a "
        "restarted worker fences its killed predecessor)."
    )
    max_in_flight: int = setting(
        5_000,
        "Most events whose outputs wait for the broker (at-least-once: acknowledgement; "
        "exactly-once: the transaction's commit). At the bound the loop stops reading and "
        "waits, so memory stays flat under a backlog (about 1.5 KiB per event in flight; "
        "5,000 is a tenth of a second at full speed).",
        ge=1, le=1_000_000,
    )
    commit_interval_ms: int = setting(
        200,
        "How often offsets are committed: at-least-once, those of every event whose outputs "
        "the broker acknowledged, without waiting; exactly-once, the open transaction (its "
        "length). Also when the input goes quiet. Larger: cheaper, more repeated outputs "
        "after a crash (at-least-once), later visible outputs (exactly-once).",
        ge=0, le=3_600_000,
    )
    metrics_host: str = metrics_host_setting()
    metrics_port: int = metrics_port_setting(8000)
    stats_interval_ms: int = setting(
        5000,
        "How often librdkafka's lag, round trips and queues update /metrics; 0: never. "
        "(Readiness follows the broker connection every second regardless.)",
        ge=0, le=86_400_000,
    )
    max_event_bytes: int = max_event_bytes_setting(
        "Events larger than this many bytes are dead-lettered unread. The default "
        "(960 KiB) leaves 16 KiB below the producer's message.max.bytes (1,000,000) for "
        "the dead letter's key and headers; the worker refuses to start when the output "
        "topics or the producer accept less than this plus 16 KiB.",
        batch=True,
    )
    event_ts_field: str = setting(
        "ts", "Event field holding the event time (epoch ms), copied to ``event_ts``.",
        batch=True,
    )
    label_field: str = setting(
        "",
        "Event field holding the event's own true label (replays, backtests), copied to "
        "the prediction as true_label; empty: off.",
        batch=True,
    )
    worker_id: str = setting(
        None, "Identifies this process in dead letters and logs (default: host-pid).",
        factory=_default_worker_id, check=not_empty,
    )
    start_timeout_s: float = start_timeout_setting()
    flush_timeout_s: float = setting(
        30.0,
        "Seconds between warnings while outputs wait for the broker; also the longest a "
        "rebalance or a shutdown waits for them before leaving their events to be read "
        "again (at-least-once) or aborting (exactly-once).",
        gt=0, le=86_400,
    )
    health_stall_s: float = health_stall_setting(30.0)
    log_level: str = log_level_setting()
    log_format: LogFormat = log_format_setting()
    kafka: Mapping[str, str] = kafka_setting()

    def __post_init__(self) -> None:
        validate(self)

    def masked(self) -> dict[str, Any]:
        return masked(self)


def masked(settings: Any) -> dict[str, Any]:
    """Settings (a dataclass with a ``kafka`` mapping) as a dict for logs, with
    secret-bearing librdkafka values hidden."""
    out = dataclasses.asdict(settings)
    out["kafka"] = {k: ("***" if is_secret(k) else v) for k, v in settings.kafka.items()}
    return out


def is_secret(key: str) -> bool:
    """Whether a librdkafka property carries a secret, by its name: ``sasl.password``,
    ``ssl.key.password``, ``ssl.keystore.password``, ``ssl.key.pem``, ``ssl_key``,
    ``sasl.oauthbearer.config``, ``sasl.oauthbearer.client.secret``,
    ``sasl.oauthbearer.assertion.private.key.pem`` and ``.passphrase``, any
    ``*.jaas.config``. Paths (``*.location``) are not secrets."""
    k = key.lower()
    return any(m in k for m in SECRET_MARKERS) and not k.endswith(".location")


def parse_kafka_pairs(pairs: list[str] | str, source: str) -> dict[str, str]:
    """``key=value`` items (a list, or a ``;``-separated string) -> dict."""
    items = pairs.split(";") if isinstance(pairs, str) else pairs
    out: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            shown = key.strip() if sep else item
            raise ConfigError(f"{source} {shown!r}: expected KEY=VALUE "
                              "(a librdkafka property, for example security.protocol=SSL)")
        out[key.strip()] = value.strip()
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None


def _kafka_table(table: Any, path: Path) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: kafka must be a table ([kafka] with \"key\" = value lines)")
    out = {}
    for k, v in table.items():
        if isinstance(v, dict | list):
            raise ConfigError(f"{path}: [kafka] {k}: expected a single value (quote the key: "
                              f'"{k}.…" = value)')
        out[str(k)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]}?" if close else "see --help for the settings"


def from_toml(path: Path, cls: type[Any] = Settings,
              tables: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """Settings (typed and checked) and the [kafka] table of a TOML file; ``tables`` are
    other tables the caller reads itself (the monitor's [[alerts]])."""
    data = read_toml(path)
    kafka = _kafka_table(data.pop("kafka", {}), path)
    for name in tables:
        data.pop(name, None)
    known = specs(cls)
    values = {}
    for key, raw in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r} ({_suggest(key, known)})")
        values[key] = parse(known[key], raw, f"{key} = {raw!r} in {path}")
    return values, kafka


def _known_env(cls: type[Any]) -> set[str]:
    return {spec.env for c in {cls, *_REGISTERED} for spec in specs(c).values()}


def from_env(env: Mapping[str, str], cls: type[Any] = Settings
             ) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """Settings of ``cls`` from ``SCORING_*`` variables; an unknown variable is an error."""
    mine = {spec.env: spec for spec in specs(cls).values()}
    known = _known_env(cls) | {"SCORING_KAFKA"}
    values = {}
    for var, raw in sorted(env.items()):
        if not var.startswith("SCORING_") or var.startswith("SCORING_TEST_"):
            continue
        if var in mine:
            values[mine[var].name] = parse(mine[var], raw, f"{var}={raw!r}")
        elif var not in known:
            raise ConfigError(f"{var}: unknown setting ({_suggest(var, known)})")
    kafka = parse_kafka_pairs(env.get("SCORING_KAFKA", ""), "SCORING_KAFKA")
    return values, kafka


def from_flags(flags: Mapping[str, Any], cls: type[Any] = Settings) -> dict[str, Any]:
    """Settings of ``cls`` given as flags (a value of None: not given)."""
    return {name: parse(spec, flags[name], f"{spec.flag} {flags[name]}")
            for name, spec in specs(cls).items() if flags.get(name) is not None}  # fmt: skip


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
    ``kafka`` mapping field; every value is checked, naming its source on failure."""
    merged: dict[str, Any] = {}
    kafka: dict[str, str] = {}
    layers = [from_toml(config_file, cls, tables)] if config_file else []
    layers.append(from_env(env, cls))
    layers.append((from_flags(flags, cls), parse_kafka_pairs(kafka_flags or [], "--kafka")))
    for values, kafka_values in layers:
        merged.update(values)
        kafka.update(kafka_values)
    for key, value in kafka.items():
        if any(ord(c) < 32 for c in key + value):
            raise ConfigError(f"librdkafka property {key!r}: contains a control character")
    return cls(**merged, kafka=kafka)  # type: ignore[call-arg]
