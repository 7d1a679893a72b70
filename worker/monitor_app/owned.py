"""What one monitor instance owns: stage one's join partitions and stage two's global
partitions, as the consumer group assigns and revokes them, with the state each restores
(worker/monitor_app/app.py runs the loop over them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from worker.clock import wall_ms
from worker.kafka_io.changelog import read_changelog
from worker.kafka_io.config import Connection, connection
from worker.kafka_io.tx import Partitions
from worker.model.bundle import load_bundle
from worker.monitor.alerts import AlertRule
from worker.monitor.join import JoinConfig
from worker.monitor.segments import DEFAULT_SEGMENT_RULES, SegmentRule
from worker.monitor.stage_global import GlobalPartition, window_sizes
from worker.monitor.stages import JoinPartition
from worker.monitor.status import MATURITY_SPAN_MS
from worker.monitor.views import ModelSpec, PredictionView
from worker.monitor_app.features import FeatureSide
from worker.monitor_app.join_stage import JoinStage
from worker.monitor_app.settings import MonitorSettings
from worker.monitor_app.status_page import StatusFeed
from worker.probes import Health

log = logging.getLogger(__name__)


def load_specs(paths: str, allow_pickle: bool = False) -> dict[tuple[str, str], ModelSpec]:
    """Model specs (task, classes, reference histogram) from bundles, by (name, version)."""
    specs = {}
    for path in (p.strip() for p in paths.split(",") if p.strip()):
        man = load_bundle(Path(path), allow_pickle=allow_pickle).manifest
        specs[(man.name, man.version)] = ModelSpec.from_manifest(man)
    return specs


@dataclass
class OwnedPartitions:
    """What this instance owns: stage one's join partitions (``stage``) and stage two's
    global partitions, assigned and revoked by the consumer group."""

    s: MonitorSettings
    rules: Sequence[AlertRule]
    specs: dict[tuple[str, str], ModelSpec]
    health: Health
    clock_ms: Callable[[], int] = wall_ms
    global_partitions: dict[int, GlobalPartition] = field(default_factory=dict)
    #: Input topics that do not exist yet (not ready until they do).
    missing: list[str] = field(default_factory=list)
    #: Per-feature drift from the workers' statistics (None: --feature-stats-topic unset).
    features: FeatureSide | None = None
    #: Fed the restored windows' records, so that maturity curves survive a restart.
    status: StatusFeed | None = None
    segment_rules: Sequence[SegmentRule] = DEFAULT_SEGMENT_RULES
    stage: JoinStage = field(init=False)

    def __post_init__(self) -> None:
        s = self.s
        dedup = None if s.dedup_window_s >= s.horizon_s else int(s.dedup_window_s * 1000)
        config = JoinConfig(horizon_ms=int(s.horizon_s * 1000), keep_joined=dedup != 0,
                            dedup_ms=dedup)
        self.stage = JoinStage(
            conf=self._conf(), changelog=s.internal.join_state,
            partials_topic=s.internal.partials,
            state_dir=Path(s.state_dir) / s.group / s.instance_id,
            windows=window_sizes(s.window_list), spec_for=self.spec_for, config=config,
            retain_ms=self._retain_ms(), segment_values_max=s.segment_values_max,
            cache_mib=s.state_cache_mib, wall_ms=self.clock_ms,
            restore=self.health.restore)

    def spec_for(self, pred: PredictionView) -> ModelSpec:
        key = pred.model_key
        if key not in self.specs:  # no bundle given: decided once per version, then kept
            self.specs[key] = ModelSpec.guess(pred)
        return self.specs[key]

    def spec_of(self, model: str, version: str) -> ModelSpec | None:
        return self.specs.get((model, version))

    @property
    def joins(self) -> dict[int, JoinPartition]:
        return self.stage.joins

    # -- partitions come and go ------------------------------------------------------
    def on_assign(self, parts: Partitions) -> None:
        topics, conf = self.s.internal, self._conf()
        t0 = time.monotonic()
        for topic, p in parts:
            if topic == topics.join:
                self.stage.assign(p)
            elif topic == topics.partials:
                gp = self._new_global(p)
                for k, v, _offset in read_changelog(conf, topics.global_state, p,
                                                    watch=self.health.restore):
                    gp.restore(k.decode(), v)
                self.global_partitions[p] = gp
                if self.status is not None:
                    now = self.clock_ms()
                    self.status.metrics(p, gp.closed_records(now, now - MATURITY_SPAN_MS))
            elif self.features is not None and topic == self.features.topic:
                self.features.assign(p)
        self.update_readiness()
        log.info("assigned %s; state restored in %.2fs", parts, time.monotonic() - t0)

    def on_revoke(self, parts: Partitions) -> None:
        topics = self.s.internal
        for topic, p in parts:
            if topic == topics.join:
                self.stage.revoke(p)
            elif topic == topics.partials:
                self.global_partitions.pop(p, None)
            elif self.features is not None and topic == self.features.topic:
                self.features.revoke(p)
        self.update_readiness()
        log.info("revoked %s", parts)

    def update_readiness(self) -> None:
        """/readyz: ready once this instance owns a partition and every input exists."""
        self.health.assigned = bool(self.joins or self.global_partitions) and not self.missing

    def _retain_ms(self) -> int:
        return int(self.s.horizon_s * 1000) + 3_600_000

    def _new_global(self, p: int) -> GlobalPartition:
        return GlobalPartition(p, self.s.window_list, self.spec_of, self.rules,
                               self._retain_ms(), segment_rules=self.segment_rules,
                               segment_top_k=self.s.segment_top_k)

    def _conf(self) -> Connection:
        return connection(self.s, self.s.instance_id)
