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

from worker.core.segment_counts import DEFAULT_SEGMENT_VALUES
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
    mlflow_cache_setting,
    mlflow_tracking_uri_setting,
    session_timeout_setting,
    start_timeout_setting,
    static_membership_setting,
    tracing_setting,
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


def _process_count(text: str) -> str:
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"{text!r} is not a whole number 1 to 256, or auto")
    return str(int(text))


SEGMENT_FIELDS_MAX = 8


def parse_segment_fields(value: str) -> tuple[str, ...]:
    """``segment_fields`` as names, in order, without repeats; ValueError when out of range."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if len(names) > SEGMENT_FIELDS_MAX:
        raise ValueError(f"at most {SEGMENT_FIELDS_MAX} segment fields, got {len(names)}")
    for name in names:
        if len(name) > 64 or "=" in name or name.startswith(".") or name.endswith(".") \
                or ".." in name:
            raise ValueError(f"{name!r} is not a field name (at most 64 characters, no '=', "
                             "dotted parts not empty)")
    return names


def _segment_fields(value: str) -> str:
    parse_segment_fields(value)
    return value


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
    mlflow_tracking_uri: str = mlflow_tracking_uri_setting()
    mlflow_cache: str = mlflow_cache_setting()
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
    processes: str = setting(
        "1",
        "Worker processes in this pod or VM, each its own consumer in the group, under one "
        "supervisor that serves their summed /metrics and combined probes, drains them all "
        "on SIGTERM and restarts one that crashes (see docs/running/scaling.md). auto: one "
        "per core the process may use (CPU affinity, a cgroup CPU limit). Keep "
        "processes x model_threads at or below the cores; more processes than the input's "
        "partitions leaves the extra ones idle.",
        check=_process_count, allowed="a whole number 1 to 256, or auto",
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
    feature_stats_segment_values: int = setting(
        DEFAULT_SEGMENT_VALUES,
        "With segment_fields and feature statistics: distinct values of one segment field "
        "whose feature counts a worker keeps apart per model version and interval (first "
        "come), and per batch (the most frequent); the counts of the other values go to "
        "__other__. Bounds the statistics records and the cost of a field of many values; "
        "keep it above the monitor's segment_top_k.",
        ge=1, le=1000,
    )
    pass_headers: bool = setting(
        False,
        "Copy the input's headers named by pass_header_names onto every output that answers "
        "it: the prediction, the shadow prediction and the dead letter (after its dlq.* "
        "headers). A record the extra headers would push past the outputs' size limit goes "
        "without them (counted in scoring_passed_headers_dropped_total, logged once a "
        "minute). false: outputs carry no input header (dead letters only their dlq.*).",
    )
    pass_header_names: str = setting(
        "traceparent,tracestate,baggage,correlation-id,x-correlation-id,x-request-id",
        "Header names, or shell patterns such as x-b3-*, separated by commas, that "
        "pass_headers copies; matched without regard to case. The default: W3C trace "
        "context and baggage, and the common correlation ids.",
        check=not_empty,
    )
    lineage: bool = setting(
        False,
        "Add source: {topic, partition, offset} of the input to each prediction (and shadow "
        "prediction), so that any prediction leads back to its exact input record; an "
        "optional field of schemas/prediction.schema.json, about 60 bytes a record.",
    )
    tracing: bool = tracing_setting(
        "a span per batch (linked to its inputs' trace context), and each output answering "
        "an input that carries a traceparent carries one that continues that trace."
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
    segment_fields: str = setting(
        "",
        "Event fields copied into each prediction's segments, comma-separated (at most 8; a "
        "dotted name such as geo.country reads a nested JSON object, or the outer.inner key "
        "that the wire formats flatten to). The monitor keeps its figures per value of each "
        "(the top K by traffic, see its segment_top_k). Strings are cut to 64 characters; "
        "numbers and booleans become their JSON text; null, objects and arrays are left out. "
        "Empty: off (predictions as before).",
        check=_segment_fields, batch=True,
        allowed="comma-separated field names, at most 8, each at most 64 characters",
    )
    explain: int = setting(
        0,
        "Reason codes: each prediction carries the K input features that moved its score "
        "most (reasons: feature, value, signed contribution, and the baseline they add up "
        "from); 0: off, predictions as without. Linear models and pipelines ending in one "
        "are explained exactly; tree ensembles need the extra scoring-worker[explain] "
        "(shap); other models are refused at start (docs/running/reasons.md).",
        ge=0, le=100, batch=True,
    )
    worker_id: str = setting(
        None, "Identifies this process in dead letters and logs (default: host-pid).",
        factory=_default_worker_id, check=not_empty,
    )
    start_timeout_s: float = start_timeout_setting(
        "With a models:/ --model, also how long to wait for the MLflow tracking server to "
        "answer before giving up (exit 1), since the model is loaded first.")
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

    @property
    def segment_field_list(self) -> tuple[str, ...]:
        return parse_segment_fields(self.segment_fields)

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


