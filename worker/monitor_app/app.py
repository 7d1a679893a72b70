"""``scoring-worker monitor``: the loop around the two stages, one Kafka transaction a batch.

One consumer group reads four topics: predictions and labels (re-keyed by id
onto the join topic), the join topic (stage one) and the partials topic (stage
two). Every batch's outputs, changelog records and input offsets are committed
in one transaction, so a monitor killed at any point restarts from a state that
matches its offsets exactly; state is rebuilt from the compacted changelogs when
partitions are assigned. Any transaction failure ends the process (crash-only):
the restart resumes from the last committed transaction.

Why not faust-streaming: see docs/architecture/why-not-faust.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry

from worker import kafka_io
from worker.clock import wall_ms
from worker.kafka_io import Message
from worker.kafka_io.config import connection, membership
from worker.kafka_io.tx import TxLoop
from worker.kafka_io.watch import BrokerWatch, quiet_transport_lines
from worker.monitor.alerts import AlertRule
from worker.monitor.feature_alerts import DEFAULT_FEATURE_RULES, FeatureRule
from worker.monitor.rekey import rekey
from worker.monitor.segments import DEFAULT_SEGMENT_RULES, SegmentRule
from worker.monitor.stage_global import Snapshot, stats_record
from worker.monitor_app import memory, wire
from worker.monitor_app.features import feature_side, feature_state_topic
from worker.monitor_app.gauges import LoopCounters, MonitorCollector, loop_counters
from worker.monitor_app.join_stage import JoinStage
from worker.monitor_app.owned import OwnedPartitions, load_specs
from worker.monitor_app.restore_gauges import RestoreCollector
from worker.monitor_app.settings import MonitorSettings
from worker.monitor_app.status_page import StatusFeed, seed
from worker.monitor_app.wire import WirePredictions
from worker.probes import Health, WatchedHealth, serve
from worker.shutdown import STOP, StopFlag
from worker.tracing_extra import RecordTracer, record_tracer

log = logging.getLogger(__name__)

#: Seconds the last commit before a stop may take in all: a broker that is away must not
#: hold the stop past the orchestrator's grace period (what did not commit is replayed).
FINAL_COMMIT_S: Final = 20.0
#: Span attributes of an alert: (attribute, the alert record's field).
ALERT_SPAN_FIELDS: Final = (("scoring.alert", "alert"), ("scoring.alert.status", "status"),
                            ("scoring.model.name", "model"),
                            ("scoring.model.version", "model_version"))



@dataclass
class Monitor:
    """The loop: poll, re-key, the two stages, tick, one transaction per batch."""

    s: MonitorSettings
    owned: OwnedPartitions
    loop: TxLoop  # subscribed by the first _await_inputs, with the inputs that exist
    counters: LoopCounters
    collector: MonitorCollector
    health: Health
    status: StatusFeed
    stop: StopFlag = field(default_factory=StopFlag)
    clock_ms: Callable[[], int] = wall_ms
    #: The decoding of --prediction-format (worker/monitor_app/wire.py); None: JSON.
    wire: WirePredictions | None = None
    #: Alert records' spans (``tracing``, worker/record_trace.py); None: off.
    tracer: RecordTracer | None = None
    last_tick: float = 0.0
    join_partitions: int = 0
    _checked: float = 0.0
    _trimmed: float = 0.0

    @property
    def stage(self) -> JoinStage:
        return self.owned.stage

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        s = self.s
        self.join_partitions = self.loop.partition_count(s.internal.join)
        self.owned.missing = self._inputs()
        self._await_inputs(force=True)
        self.health.broker_ok = True
        try:
            while not self.stop.requested:
                self.turn()
        finally:
            self.loop.close()
            self.stage.close()

    def _inputs(self) -> list[str]:
        return [t for t in (self.s.predictions_topic, self.s.labels_topic) if t]

    def _await_inputs(self, force: bool = False) -> None:
        """Subscribe to the input topics once they exist; until then, one log line and
        /readyz 503 (deployments start everything at once on a fresh cluster)."""
        if not self.owned.missing or (not force and time.monotonic() - self._checked < 1.0):
            return
        self._checked = time.monotonic()
        present = self.loop.existing(self._inputs())
        missing = [t for t in self._inputs() if t not in present]
        if force or missing != self.owned.missing:
            internal = [self.s.internal.join, self.s.internal.partials,
                        *([self.s.feature_stats_topic] if self.s.feature_stats_topic else [])]
            self.loop.subscribe([*internal, *(t for t in self._inputs() if t in present)])
            if missing and force:
                log.warning("waiting for input topics %s to be created; not ready meanwhile",
                            ", ".join(missing))
            elif not missing and not force:
                log.info("input topics %s now exist; subscribed", ", ".join(self._inputs()))
        self.owned.missing = missing
        self.owned.update_readiness()

    def turn(self) -> None:
        s = self.s
        msgs = self.loop.poll(s.batch_max, s.batch_wait_ms / 1000)
        self.health.turned()
        now = self.clock_ms()
        by_role: dict[str, list[Message]] = defaultdict(list)
        for m in msgs:
            by_role[self._role(m.topic() or "")].append(m)
        for role, batch in by_role.items():
            self.counters.consumed.labels(role).inc(len(batch))
        self._rekey(by_role["source"], now)
        self.stage.apply(by_role["join"])
        self._stage_two(by_role["partials"], now)
        if self.owned.features is not None:
            self.owned.features.apply((m.partition() or 0, m.value()) for m in by_role["features"])
        if time.monotonic() - self.last_tick >= s.tick_ms / 1000:
            self.last_tick = time.monotonic()
            self._tick(now)
            self._await_inputs()
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if self.loop.open_for() * 1000 < self.s.commit_interval_ms and \
                self.loop.polled_messages < self.s.transaction_max and \
                not self.stop.requested:
            return
        self.stage.emit(self.loop)
        ok = self.loop.commit(FINAL_COMMIT_S if self.stop.requested else None)
        if ok:
            self.counters.transactions.inc()
            self.stage.committed()

    def _role(self, topic: str) -> str:
        names = self.s.internal
        if topic == self.s.feature_stats_topic:
            return "features"
        return "join" if topic == names.join else (
            "partials" if topic == names.partials else "source")

    def _rekey(self, msgs: list[Message], now: int) -> None:
        """Predictions and labels, checked once, as one block per join partition."""
        if not msgs:
            return
        preds = self.s.predictions_topic
        values = [m.value() for m in msgs] if self.wire is None else self.wire.values(msgs, preds)
        items = ((m.topic() == preds, v, _kafka_ms(m, now), m.partition() or 0)
                 for m, v in zip(msgs, values, strict=True))
        blocks = rekey(items, self.join_partitions, self.s.true_label_field)
        for p, block in blocks.items():
            self.loop.send(self.s.internal.join, None, block.encode(), partition=p)

    def _stage_two(self, msgs: list[Message], now: int) -> None:
        by_part: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for m in msgs:
            by_part[m.partition() or 0].append(((m.key() or b"").decode(),
                                                orjson.loads(m.value() or b"{}")))
        for p, items in by_part.items():
            gp = self.owned.global_partitions.get(p)
            if gp is None:
                continue
            changes, records, _ = gp.apply(items, now)
            for key, value in changes.items():
                self.loop.send(self.s.internal.global_state, key.encode(), value, partition=p)
            for key, value in records:
                self.loop.send(self.s.metrics_topic, key.encode(), value)
            self.status.metrics(p, records)

    def _alert(self, key: bytes, value: bytes) -> None:
        """An alert record, with the trace context of its own span when tracing is on."""
        headers = None
        if self.tracer is not None:
            record = orjson.loads(value)
            headers = self.tracer("model alert", {
                k: str(record[f]) for k, f in ALERT_SPAN_FIELDS if record.get(f) is not None})
        self.loop.send(self.s.alerts_topic, key, value, headers=headers)
        log.warning("alert %s", value.decode())

    def _tick(self, now: int) -> None:
        lag = self.loop.lag(set(self._lag_roles()))
        self.stage.sweep(now, idle_s=max(5.0, 4 * self.s.commit_interval_ms / 1000),
                         behind=any(lag.values()))
        snapshots = []
        for p, gp in self.owned.global_partitions.items():
            changes, metric_records, alerts, snap = gp.tick(now)
            for key, value in changes.items():
                self.loop.send(self.s.internal.global_state, key.encode(), value, partition=p)
            for key, value in metric_records:
                self.loop.send(self.s.metrics_topic, key.encode(), value)
            for key, value in alerts:
                self._alert(key.encode(), value)
            self.status.metrics(p, metric_records)
            self.status.alerts(p, alerts)
            if gp.stats:
                stats = stats_record(snap.join, snap.invalid, now)
                self.loop.send(self.s.stats_topic, b"all", stats)
                self.status.join_stats(p, stats)
            snapshots.append(snap)
        if self.owned.features is not None:
            for alert_key, alert in self.owned.features.tick(now):
                self._alert(alert_key, alert)
            for p, state_key, state in self.owned.features.state_records():
                self.loop.send(self.s.internal.feature_state, state_key, state, partition=p)
        merged = merge_snapshots(snapshots)
        self.collector.update(merged)
        self.status.segments(merged.segments)
        self.status.reasons(merged.reasons)
        self.status.tick(now, self.owned.global_partitions)
        self._progress(lag)
        if time.monotonic() - self._trimmed >= 30.0:
            self._trimmed = time.monotonic()
            memory.trim()

    def _lag_roles(self) -> dict[str, str]:
        return {t: role for t, role in ((self.s.predictions_topic, "predictions"),
                                        (self.s.labels_topic, "labels")) if t}

    def _progress(self, lag: dict[str, int]) -> None:
        """Lag gauges: messages behind on the inputs, age of the newest join, disk."""
        roles = self._lag_roles()
        stage = self.stage
        self.collector.progress(
            {roles[t]: n for t, n in lag.items()},
            stage.newest_join_ms(),
            (stage.disk_bytes(), stage.memory_bytes()),
        )


def _kafka_ms(m: Message, fallback: int) -> int:
    """The record's Kafka timestamp (the join's clock); the wall clock when it has none."""
    kind, ts = m.timestamp()
    return ts if kind != 0 and ts >= 0 else fallback


def merge_snapshots(snaps: list[Snapshot]) -> Snapshot:
    """One snapshot for the gauges from every stage-two partition this instance owns."""
    out = Snapshot()
    for snap in snaps:
        out.figures.update(snap.figures)
        out.segments.update(snap.segments)
        out.reasons.update(snap.reasons)
        out.join = out.join.merge(snap.join)
        out.invalid += snap.invalid
    return out


def create_topics(s: MonitorSettings) -> None:
    compact = {"cleanup.policy": "compact"}
    names = s.internal
    if s.create_input_topics:
        inputs = [t for t in (s.predictions_topic, s.labels_topic) if t]
        kafka_io.create_topics(s.bootstrap, dict.fromkeys(inputs, s.partitions), extra=s.kafka)
    work = {names.join: s.partitions, names.partials: s.partitions}
    kafka_io.create_topics(s.bootstrap, work, extra=s.kafka)
    kafka_io.create_topics(s.bootstrap, {names.join_state: s.partitions,
                                         names.global_state: s.partitions,
                                         s.metrics_topic: 1, s.stats_topic: 1},
                           config=compact, extra=s.kafka)
    kafka_io.create_topics(s.bootstrap, {s.alerts_topic: 1}, extra=s.kafka)
    if s.feature_stats_topic:
        kafka_io.create_topics(s.bootstrap, {s.feature_stats_topic: s.partitions}, extra=s.kafka)


def run_monitor(
    s: MonitorSettings,
    rules: Sequence[AlertRule],
    registry: CollectorRegistry | None = None,
    stop: StopFlag = STOP,
    feature_rules: tuple[FeatureRule, ...] = DEFAULT_FEATURE_RULES,
    segment_rules: Sequence[SegmentRule] = DEFAULT_SEGMENT_RULES,
) -> None:
    # A bad bundle is the user's mistake: refused before the broker.
    specs = load_specs(s.models, s.allow_pickle)
    registry = registry or CollectorRegistry()
    # Readiness follows the clients' connection state; an outage is two log lines, not
    # librdkafka's line per reconnection attempt.
    # No silence rule: a restore or a large tick keeps the loop from polling for seconds
    # while the broker is fine, and a loop that stops turning is /healthz's to report.
    quiet_transport_lines()
    watch = BrokerWatch(silent_s=math.inf)
    health = WatchedHealth(stall_s=s.health_stall_s, watch=watch)
    wire_predictions = wire.build(s, health, lambda: stop.requested)
    health.model_loaded = True  # the monitor needs no model to run
    collector = MonitorCollector(registry)
    RestoreCollector(registry, health.restore)
    status = StatusFeed(rules, s.window_list, s.instance_id, s.partitions)
    features = feature_side(s, feature_rules, registry)
    routes = {**status.routes(), **({} if features is None else features.routes())}
    server = (serve(s.metrics_port, registry, health, s.metrics_host, routes=routes)
              if s.metrics_port else None)
    try:  # SIGTERM during start-up: the wait polls the flag, the steps after it check it
        kafka_io.wait_for_broker(s.bootstrap, s.start_timeout_s, extra=s.kafka,
                                 stop=lambda: stop.requested)
        create_topics(s)
        seed(status, s, wall_ms())
        if stop.requested:
            return
        counters = loop_counters(registry)
        memory.limit_arenas()
        owned = OwnedPartitions(s, rules, specs, health, features=features, status=status,
                                segment_rules=segment_rules)
        loop = TxLoop(connection(s, s.instance_id), membership(s), f"{s.group}-{s.instance_id}",
                      owned.on_assign, owned.on_revoke, stopping=lambda: stop.requested,
                      watch=watch)
        if features is not None:
            features.committed = loop.committed
            features.state_topic, features.state_partitions = feature_state_topic(
                s, loop.partition_count)
        mon = Monitor(s, owned, loop, counters, collector, health, status, stop=stop,
                      wire=wire_predictions, tracer=record_tracer(s.tracing))
        mon.run()
    finally:
        if server is not None:
            server.shutdown()

