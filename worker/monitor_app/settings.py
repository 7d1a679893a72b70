"""The monitor's settings: defaults < TOML file < SCORING_* env < flags, as for the worker.

Alert rules come from ``[[alerts]]`` tables of the TOML file (see alerts.py);
without any, the default rules apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from worker.monitor.segments import DEFAULT_TOP_K, DEFAULT_VALUES_MAX
from worker.monitor.windows import WindowSize, parse_windows
from worker.settings_common import (
    LogFormat,
    allow_pickle_setting,
    bootstrap_setting,
    health_stall_setting,
    instance_id_setting,
    kafka_setting,
    log_format_setting,
    log_level_setting,
    metrics_host_setting,
    metrics_port_setting,
    session_timeout_setting,
    start_timeout_setting,
    state_home,
    static_membership_setting,
    tracing_setting,
)
from worker.settings_rules import not_empty, optional_topic, setting, topic, validate
from worker.settings_sources import masked, register
from worker.wire_settings import PredictionFormatSettings


def _windows(value: str) -> str:
    parse_windows(value)
    return value


@dataclass(frozen=True, slots=True)
class InternalTopics:
    """The monitor's own topics, named after its group."""

    join: str  # predictions and labels re-keyed by id, to the join partition that owns it
    partials: str  # per-partition window deltas, to the merge of the global view
    join_state: str  # changelog of the join partitions' state (RocksDB)
    global_state: str  # changelog of the merged windows
    feature_state: str  # changelog of the feature alerts' states (with feature statistics)

    @classmethod
    def of_group(cls, group: str) -> InternalTopics:
        return cls(f"{group}-join", f"{group}-partials", f"{group}-join-changelog",
                   f"{group}-global-changelog", f"{group}-feature-changelog")


@register
@dataclass(frozen=True)
class MonitorSettings(PredictionFormatSettings):
    """Monitor settings; every field is also ``SCORING_<FIELD>`` and ``--<field>``."""

    bootstrap: str = bootstrap_setting()
    predictions_topic: str = setting(
        "predictions", "Topic of the worker's predictions.", check=topic
    )
    labels_topic: str = setting(
        "labels", "Topic of true labels ({id, label, ts?}); empty: predictions only.",
        check=optional_topic,
    )
    metrics_topic: str = setting(
        "model-metrics", "Compacted topic of the window figures, keyed model|version|window|start.",
        check=topic,
    )
    alerts_topic: str = setting(
        "model-alerts", "Topic of alert records (firing, resolved).", check=topic
    )
    stats_topic: str = setting(
        "model-join-stats", "Compacted topic of the label-join counters.", check=topic
    )
    feature_stats_topic: str = setting(
        "",
        "Topic of the workers' feature statistics (their --feature-stats-topic): per-feature "
        "drift and data-quality windows, gauges and alerts against each bundle's reference "
        "profile (bundles from --models); empty: off.",
        check=optional_topic,
    )
    segment_top_k: int = setting(
        DEFAULT_TOP_K,
        "Segment values shown per segment field and window: the K with the most predictions "
        "(ties by value), decided from the merged exact counts at every tick; the rest are "
        "merged into one '__other__' row. Gauges carry at most K + 1 values per field.",
        ge=1, le=200,
    )
    segment_values_max: int = setting(
        DEFAULT_VALUES_MAX,
        "Distinct values of one segment field that a join partition keeps per window (first "
        "come, in the partition's order; read back after a restart); later values of that "
        "window are counted in '__other__'. Bounds the monitor's state whatever the field's "
        "cardinality; keep it well above segment_top_k.",
        ge=1, le=100_000,
    )
    group: str = setting(
        "scoring-monitor",
        "Consumer group; also the prefix of the monitor's internal topics (join, partials, "
        "changelogs). Instances in one group share the work.",
        check=topic,
    )
    instance_id: str = instance_id_setting(
        "Stable name of this instance: its transactional id, so that a restart aborts what "
        "a killed predecessor left open; also its static group member id, see "
        "static_membership."
    )
    static_membership: bool = static_membership_setting()
    session_timeout_s: float = session_timeout_setting()
    tracing: bool = tracing_setting(
        "each alert record carries the traceparent of a span of its own (model, version, "
        "rule and state as attributes), so that whatever handles the alert continues its "
        "trace."
    )
    windows: str = setting(
        "5m,1h", "Tumbling window sizes, comma-separated (ms, s, m, h, d).", check=_windows,
        allowed="sizes such as 30s, 5m, 1h, 1d (a whole number, then ms, s, m, h or d), "
        "comma-separated",
    )
    horizon_s: float = setting(
        86_400.0,
        "How long a prediction waits for its label (and a label for its prediction), "
        "in seconds of the records' Kafka time.",
        gt=0,
    )
    dedup_window_s: float = setting(
        3600.0,
        "How long a joined id is remembered, in seconds (at most horizon_s counts): a "
        "retried prediction or a second label within it is counted as a duplicate; after "
        "it, as a new prediction (which expires unlabeled) or a new label (unmatched).",
        ge=0,
    )
    state_dir: str = setting(
        None,
        "Folder of the on-disk join state (RocksDB, one per join partition, under "
        "<group>/<instance_id>/). A copy: lost, it is rebuilt from the changelog topic, "
        "which takes time for a large state; kept, a restart replays only the changelog's "
        "tail. Default: $XDG_STATE_HOME/scoring-monitor (~/.local/state/scoring-monitor), "
        "not /tmp, which a reboot or a tmp cleaner empties.",
        factory=lambda: str(state_home() / "scoring-monitor"), check=not_empty,
    )
    state_cache_mib: int = setting(
        64,
        "RocksDB's memory for all join partitions, in MiB: one block cache, with the "
        "write buffers (memtables) charged to it.",
        ge=16, le=65_536,
    )
    true_label_field: str = setting(
        "true_label", "Prediction field carrying the true label (replays, backtests)."
    )
    models: str = setting(
        "", "Model bundles (comma-separated): their reference histograms give PSI drift."
    )
    allow_pickle: bool = allow_pickle_setting("Load .joblib (pickle) bundles given in ``models``.")
    partitions: int = setting(
        4, "Partitions of the internal topics: the most instances that can share the work.",
        ge=1, le=10_000,
    )
    tick_ms: int = setting(
        1000, "How often the rolling view, gauges, alerts and expiry are updated.",
        ge=10, le=3_600_000,
    )
    batch_max: int = setting(5000, "Most messages read in one poll.", ge=1, le=1_000_000)
    batch_wait_ms: int = setting(100, "Longest wait for a poll to fill, in ms.", ge=1,
                                 le=60_000)
    commit_interval_ms: int = setting(
        500,
        "How long a transaction gathers polls before it commits, in ms: fewer, larger "
        "transactions when the monitor is behind; figures lag by about three of these "
        "(re-key, join, merge).",
        ge=10, le=60_000,
    )
    transaction_max: int = setting(
        50_000, "Most messages in one transaction, whatever the interval.", ge=1,
        le=10_000_000,
    )
    create_input_topics: bool = setting(
        False,
        "Create the predictions and labels topics (with `partitions` partitions) when "
        "missing at start; false: wait for them, not ready meanwhile.",
    )
    metrics_host: str = metrics_host_setting()
    metrics_port: int = metrics_port_setting(8001)
    health_stall_s: float = health_stall_setting(60.0)
    start_timeout_s: float = start_timeout_setting()
    log_level: str = log_level_setting()
    log_format: LogFormat = log_format_setting()
    kafka: Mapping[str, str] = kafka_setting()

    def __post_init__(self) -> None:
        validate(self)

    @cached_property
    def window_sizes(self) -> tuple[WindowSize, ...]:
        """``windows`` parsed: each size's name and length, in the order given."""
        return parse_windows(self.windows)

    @property
    def window_list(self) -> list[str]:
        return [w.name for w in self.window_sizes]

    @property
    def internal(self) -> InternalTopics:
        return InternalTopics.of_group(self.group)

    def masked(self) -> dict[str, Any]:
        return masked(self)
