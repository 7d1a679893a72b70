"""One typed settings object for the worker (the loader every command shares is
worker/settings_sources.py).

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

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    session_timeout_setting,
    start_timeout_setting,
    static_membership_setting,
)
from worker.settings_rules import not_empty, optional_topic, setting, topic, validate
from worker.settings_sources import (
    is_secret,
    load_into,
    masked,
    parse_kafka_pairs,
    read_toml,
    register,
)
from worker.wire_settings import WireFormatSettings

__all__ = ["is_secret", "load_into", "masked", "parse_kafka_pairs", "read_toml", "register",
           "setting", "validate"]  # re-exported: callers say config.load_into


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@register
@dataclass(frozen=True)
class Settings(WireFormatSettings):
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
        "(it has a ``current`` file), whose pointer the worker then follows (hot reload); "
        "or an MLflow registered model, models:/NAME@ALIAS (followed when the alias "
        "moves) or models:/NAME/VERSION (needs the mlflow extra).",
        batch=True,
    )
    mlflow_tracking_uri: str = setting(
        "",
        "MLflow tracking server of a models:/ --model, for example http://mlflow:5000 "
        "(user:password@ in it is masked in logs); empty: the MLFLOW_TRACKING_URI "
        "variable, else MLflow's own default.",
    )
    mlflow_cache: str = setting(
        "~/.cache/scoring-worker/mlflow",
        "Folder where MLflow model versions become bundles (<name>/<version>), kept for "
        "the next start.",
        check=not_empty,
    )
    mlflow_poll_ms: int = setting(
        10_000,
        "How often a worker serving models:/NAME@ALIAS asks MLflow where the alias points, "
        "in milliseconds.",
        ge=100, le=3_600_000,
    )
    allow_pickle: bool = allow_pickle_setting(
        "Load .joblib (pickle) model bundles, and MLflow versions serialized with pickle.",
        batch=True)
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
    feature_stats_topic: str = setting(
        "",
        "Topic of the feature statistics (schemas/feature_stats.schema.json): the features "
        "of every event that decoded into an object, scored or dead-lettered (a refused "
        "value as missing), counted into the bins of the bundle's reference profile, per "
        "model version and interval; exactly-once, in the transaction of the outputs they "
        "describe. Empty: off (and for a bundle without a profile).",
        check=optional_topic,
    )
    feature_stats_interval_ms: int = setting(
        60_000,
        "Interval of scoring time that feature statistics are keyed by, in milliseconds; "
        "the monitor's window sizes should be multiples of it.",
        ge=1000, le=3_600_000,
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
        "restarted worker fences its killed predecessor; also its static group member id, "
        "see static_membership)."
    )
    static_membership: bool = static_membership_setting()
    session_timeout_s: float = session_timeout_setting()
    transaction_timeout_s: float = setting(
        10.0,
        "Exactly-once: the broker aborts a transaction open longer than this "
        "(transaction.timeout.ms; librdkafka's socket and delivery timeouts follow it), and "
        "a transactional call that hangs longer (seen after a broker restart) replaces the "
        "producer, whose new session aborts the transaction and rereads its events. Lower: "
        "a broker restart costs readiness for less time; must exceed commit_interval_ms.",
        ge=1, le=900,
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
        if (self.guarantee == Guarantee.EXACTLY_ONCE
                and self.commit_interval_ms >= self.transaction_timeout_s * 1000):
            raise ConfigError(
                f"commit_interval_ms {self.commit_interval_ms} must be below "
                f"transaction_timeout_s ({self.transaction_timeout_s:g} s) in exactly-once "
                "mode: the broker would abort every transaction")

    def masked(self) -> dict[str, Any]:
        return masked(self)


def load(
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    kafka_flags: list[str] | None = None,
) -> Settings:
    """The worker's settings from every source; flags whose value is None were not given."""
    return load_into(Settings, config_file, env, flags, kafka_flags)


