"""Settings of ``scoring-worker retrain``: defaults < TOML file < SCORING_* env < flags, as for
the worker; the promotion policy is the TOML file's ``[policy]`` table (policy.py).

The time range is not a setting but the job's argument (``--from``/``--to`` or
``--last``), parsed here with the current time passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from worker.errors import ConfigError
from worker.monitor.windows import parse_window
from worker.settings_common import (
    LogFormat,
    allow_pickle_setting,
    bootstrap_setting,
    kafka_setting,
    log_format_setting,
    log_level_setting,
    max_event_bytes_setting,
    mlflow_cache_setting,
    mlflow_tracking_uri_setting,
    tracing_setting,
)
from worker.settings_rules import optional_topic, setting, topic, validate
from worker.settings_sources import masked, register
from worker.wire_settings import EventFormatSettings


class RegisterIn(StrEnum):
    """Where ``retrain`` takes its champion from and keeps its candidate (``--register``)."""

    STORE = "store"
    MLFLOW = "mlflow"


def _fraction(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError("must be above 0 and below 1")
    return value


@register
@dataclass(frozen=True)
class RetrainSettings(EventFormatSettings):
    """Retrain settings; every field is also ``SCORING_<FIELD>`` and ``--<field>``."""

    bootstrap: str = bootstrap_setting()
    input_topic: str = setting(
        "transactions", "Topic of the events (the workers' input) to retrain on.", check=topic
    )
    labels_topic: str = setting("labels", "Topic of true labels ({id, label, ts?}).", check=topic)
    model: str = setting(
        "",
        "The model's store folder STORE/<name> (it has a ``current`` file): its current "
        "version is the champion, and the candidate is added there as a new version; with "
        "register = mlflow, models:/NAME@ALIAS: the version the alias points to is the "
        "champion.",
    )
    register: RegisterIn = setting(
        RegisterIn.STORE,
        "Where the champion comes from and the candidate goes: store (the model store of "
        "--model) or mlflow (a new version of the registered model, with its holdout "
        "figures as metrics, lineage as tags, the comparison table as an artifact and the "
        "alias challenger; a promotion moves the --model alias; needs the mlflow extra).",
    )
    mlflow_tracking_uri: str = mlflow_tracking_uri_setting()
    mlflow_cache: str = mlflow_cache_setting()
    allow_pickle: bool = allow_pickle_setting(
        "Load a .joblib (pickle) champion, and write its candidate as .joblib too."
    )
    schema: str = setting(
        "", "JSON Schema the events must satisfy (the workers' --schema); empty: none."
    )
    max_event_bytes: int = max_event_bytes_setting(
        "Events larger than this are skipped, as the worker dead-letters them (the same "
        "default as the worker's)."
    )
    control_topic: str = setting(
        "",
        "The workers' model-control topic: a promotion (or --shadow) is published there, so "
        "every worker swaps; empty: the store's pointer only.",
        check=optional_topic,
    )
    alerts_topic: str = setting(
        "model-alerts", "Topic of the decision record (schemas/model_decision.schema.json).",
        check=topic,
    )
    tracing: bool = tracing_setting(
        "the decision record carries the traceparent of a span of its own (model, "
        "candidate, champion and action as attributes), so that whatever acts on it "
        "continues its trace."
    )
    holdout_fraction: float = setting(
        0.3, "Share of the labeled rows, the newest, held out for the comparison.",
        check=_fraction, allowed="a number above 0 and below 1",
    )
    seed: int = setting(
        0,
        "Seed for estimators whose random_state is unset (None), so that the same range "
        "and seed give the same model; an integer random_state of the champion is kept.",
        ge=0, le=2**32 - 1,
    )
    label_horizon_s: float = setting(
        86_400.0,
        "Labels are read until this many seconds after the range's end (or until now): "
        "labels come later than their events.",
        ge=0,
    )
    read_timeout_s: float = setting(
        120.0, "Most seconds to spend reading the range of each topic.", gt=0, le=86_400
    )
    max_events: int = setting(
        5_000_000, "Most events a run reads; a larger range is refused (the job holds it all).",
        ge=1,
    )
    # WARNING by default: a batch job's stdout is its report, and its stderr stays quiet
    # unless something is wrong (INFO logs the counts and the decision as JSON lines).
    log_level: str = log_level_setting("WARNING")
    log_format: LogFormat = log_format_setting()
    kafka: Mapping[str, str] = kafka_setting()

    def __post_init__(self) -> None:
        validate(self)

    def masked(self) -> dict[str, Any]:
        return masked(self)

    def check(self) -> None:
        """What the job cannot run without; ConfigError naming the setting."""
        if not self.model:
            raise ConfigError("no model (give --model STORE/<name>: the model's store folder; "
                              "or --register mlflow --model models:/NAME@ALIAS)")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start_ms, end_ms)`` of Kafka record timestamps."""

    start_ms: int
    end_ms: int

    def describe(self) -> str:
        return f"[{iso(self.start_ms)}, {iso(self.end_ms)})"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def parse_time(text: str, what: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time (without a zone: UTC)."""
    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r} is neither epoch milliseconds nor an ISO 8601 "
                          "time (e.g. 2026-11-27T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def time_range(start: str | None, end: str | None, last: str | None, now_ms: int) -> TimeRange:
    """The range from ``--from``/``--to`` (end default: now) or ``--last DURATION``."""
    if last is not None and start is not None:
        raise ConfigError("give either --last or --from, not both")
    end_ms = now_ms if end is None else parse_time(end, "--to")
    if last is not None:
        try:
            start_ms = end_ms - parse_window(last)
        except ValueError as exc:
            raise ConfigError(f"--last: {exc}") from None
    elif start is not None:
        start_ms = parse_time(start, "--from")
    else:
        raise ConfigError("no time range: give --last DURATION (e.g. 2h) or --from TIME")
    if start_ms >= end_ms:
        raise ConfigError(f"empty time range: --from {iso(start_ms)} is not before {iso(end_ms)}")
    return TimeRange(start_ms, end_ms)
