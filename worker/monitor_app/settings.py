"""The monitor's settings: defaults < TOML file < SCORING_* env < flags, as for the worker.

Alert rules come from ``[[alerts]]`` tables of the TOML file (see alerts.py);
without any, the default rules apply.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.config import masked, setting


@dataclass(frozen=True)
class MonitorSettings:
    """Monitor settings; every field is also ``SCORING_<FIELD>`` and ``--<field>``."""

    bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers.")
    predictions_topic: str = setting("predictions", "Topic of the worker's predictions.")
    labels_topic: str = setting(
        "labels", "Topic of true labels ({id, label, ts?}); empty: predictions only."
    )
    metrics_topic: str = setting(
        "model-metrics", "Compacted topic of the window figures, keyed model|version|window|start."
    )
    alerts_topic: str = setting("model-alerts", "Topic of alert records (firing, resolved).")
    stats_topic: str = setting("model-join-stats", "Compacted topic of the label-join counters.")
    group: str = setting(
        "scoring-monitor",
        "Consumer group; also the prefix of the monitor's internal topics (join, partials, "
        "changelogs). Instances in one group share the work.",
    )
    instance_id: str = setting(
        socket.gethostname(),
        "Stable name of this instance: its transactional id, so that a restart aborts what "
        "a killed predecessor left open.",
    )
    windows: str = setting("5m,1h", "Tumbling window sizes, comma-separated (ms, s, m, h, d).")
    horizon_s: float = setting(
        86_400.0,
        "How long a prediction waits for its label (and a label for its prediction), "
        "in seconds of the records' Kafka time; > 0.",
    )
    dedup_window_s: float = setting(
        3600.0,
        "How long a joined id is remembered, in seconds (0 to horizon_s): a retried "
        "prediction or a second label within it is counted as a duplicate; after it, as "
        "a new prediction (which expires unlabeled) or a new label (unmatched).",
    )
    state_dir: str = setting(
        str(Path(tempfile.gettempdir()) / "scoring-monitor"),
        "Folder of the on-disk join state (RocksDB, one per join partition, under "
        "<group>/<instance_id>/). A copy: lost, it is rebuilt from the changelog topic.",
    )
    state_cache_mib: int = setting(
        64,
        "RocksDB's memory for all join partitions, in MiB (16-4096): one block cache, "
        "with the write buffers (memtables) charged to it.",
    )
    true_label_field: str = setting(
        "true_label", "Prediction field carrying the true label (replays, backtests)."
    )
    models: str = setting(
        "", "Model bundles (comma-separated): their reference histograms give PSI drift."
    )
    partitions: int = setting(
        4, "Partitions of the internal topics: the most instances that can share the work."
    )
    tick_ms: int = setting(
        1000, "How often the rolling view, gauges, alerts and expiry are updated."
    )
    batch_max: int = setting(5000, "Most messages read in one poll (100-100000).")
    batch_wait_ms: int = setting(100, "Longest wait for a poll to fill, in ms (1-10000).")
    commit_interval_ms: int = setting(
        500,
        "How long a transaction gathers polls before it commits, in ms (10-10000): "
        "fewer, larger transactions when the monitor is behind; figures lag by about "
        "three of these (re-key, join, merge).",
    )
    transaction_max: int = setting(
        50_000, "Most messages in one transaction, whatever the interval (1000-1000000)."
    )
    create_input_topics: bool = setting(
        False,
        "Create the predictions and labels topics (with `partitions` partitions) when "
        "missing at start; false: wait for them, not ready meanwhile.",
    )
    metrics_port: int = setting(8001, "Port of /metrics, /healthz and /readyz; 0: off.")
    health_stall_s: float = setting(
        60.0, "Seconds without a loop turn after which /healthz reports unhealthy."
    )
    log_level: str = setting("INFO", "Python logging level.")
    kafka: Mapping[str, str] = field(
        default_factory=dict,
        metadata={"doc": "librdkafka properties for every client (TLS, SASL, tuning)."},
    )

    @property
    def window_list(self) -> list[str]:
        return [w.strip() for w in self.windows.split(",") if w.strip()]

    @property
    def internal(self) -> dict[str, str]:
        """Names of the internal topics, derived from the group."""
        g = self.group
        return {
            "join": f"{g}-join",
            "partials": f"{g}-partials",
            "join_state": f"{g}-join-changelog",
            "global_state": f"{g}-global-changelog",
        }

    def masked(self) -> dict[str, Any]:
        return masked(self)
