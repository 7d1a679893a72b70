"""``scoring-worker monitor``: the loop around the two stages, one Kafka transaction a batch.

One consumer group reads four topics: predictions and labels (re-keyed by id
onto the join topic), the join topic (stage one) and the partials topic (stage
two). Every batch's outputs, changelog records and input offsets are committed
in one transaction, so a monitor killed at any point restarts from a state that
matches its offsets exactly; state is rebuilt from the compacted changelogs when
partitions are assigned. Any transaction failure ends the process (crash-only):
the restart resumes from the last committed transaction.

Why not faust-streaming: see README.md ("Monitor: why not faust").
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from worker import kafka_io
from worker.clock import wall_ms
from worker.kafka_io import Message
from worker.kafka_io.config import Connection, connection
from worker.kafka_io.tx import Partitions, TxLoop, read_changelog
from worker.model.bundle import load_bundle
from worker.monitor.alerts import AlertRule
from worker.monitor.join import JoinConfig
from worker.monitor.stage_global import GlobalPartition, Snapshot, stats_record, window_sizes
from worker.monitor.stages import Changelog, JoinPartition
from worker.monitor.views import ModelSpec, PredictionView
from worker.monitor_app.gauges import MonitorCollector, loop_counters
from worker.monitor_app.settings import MonitorSettings
from worker.monitor_app.status_page import StatusFeed, seed
from worker.probes import Health, serve
from worker.shutdown import STOP, StopFlag

log = logging.getLogger(__name__)



def load_specs(paths: str, allow_pickle: bool = False) -> dict[tuple[str, str], ModelSpec]:
    """Model specs (task, classes, reference histogram) from bundles, by (name, version)."""
    specs = {}
    for path in (p.strip() for p in paths.split(",") if p.strip()):
        man = load_bundle(Path(path), allow_pickle=allow_pickle).manifest
        specs[(man.name, man.version)] = ModelSpec.from_manifest(man)
    return specs


@dataclass
class Monitor:
    s: MonitorSettings
    rules: Sequence[AlertRule]
    specs: dict[tuple[str, str], ModelSpec]
    collector: MonitorCollector
    health: Health
    clock_ms: Callable[[], int] = wall_ms
    joins: dict[int, JoinPartition] = field(default_factory=dict)
    globals: dict[int, GlobalPartition] = field(default_factory=dict)
    stop: StopFlag = field(default_factory=StopFlag)
    last_tick: float = 0.0
    loop: TxLoop | None = None
    counters: Any = None
    status: StatusFeed = field(default_factory=lambda: StatusFeed((), ()))

    def spec_for(self, pred: PredictionView) -> ModelSpec:
        key = pred.model_key
        if key not in self.specs:  # no bundle given: decided once per version, then kept
            self.specs[key] = ModelSpec.guess(pred)
        return self.specs[key]

    def spec_of(self, model: str, version: str) -> ModelSpec | None:
        return self.specs.get((model, version))


    # -- partitions come and go ------------------------------------------------------
    def on_assign(self, parts: Partitions) -> None:
        topics, conf = self.s.internal, self._conf()
        t0 = time.monotonic()
        for topic, p in parts:
            if topic == topics["join"]:
                jp = self._new_join(p)
                for k, v in read_changelog(conf, topics["join_state"], p):
                    jp.restore(k.decode(), v)
                self.joins[p] = jp
            elif topic == topics["partials"]:
                gp = self._new_global(p)
                for k, v in read_changelog(conf, topics["global_state"], p):
                    gp.restore(k.decode(), v)
                self.globals[p] = gp
        self.health.assigned = bool(self.joins or self.globals)
        log.info("assigned %s; state restored in %.2fs", parts, time.monotonic() - t0)

    def on_revoke(self, parts: Partitions) -> None:
        topics = self.s.internal
        for topic, p in parts:
            if topic == topics["join"]:
                self.joins.pop(p, None)
            elif topic == topics["partials"]:
                self.globals.pop(p, None)
        self.health.assigned = bool(self.joins or self.globals)
        log.info("revoked %s", parts)

    def _new_join(self, p: int) -> JoinPartition:
        config = JoinConfig(horizon_ms=int(self.s.horizon_s * 1000))
        retain = int(self.s.horizon_s * 1000) + 3_600_000
        return JoinPartition(p, window_sizes(self.s.window_list), self.spec_for, config,
                             self.s.true_label_field, retain)  # fmt: skip

    def _new_global(self, p: int) -> GlobalPartition:
        retain = int(self.s.horizon_s * 1000) + 3_600_000
        return GlobalPartition(p, self.s.window_list, self.spec_of, self.rules, retain)

    def _conf(self) -> Connection:
        return connection(self.s, self.s.instance_id)

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        s = self.s
        topics = [s.predictions_topic, s.internal["join"], s.internal["partials"]]
        if s.labels_topic:
            topics.append(s.labels_topic)
        self.loop = TxLoop(self._conf(), s.group, f"{s.group}-{s.instance_id}", topics,
                           self.on_assign, self.on_revoke)  # fmt: skip
        self.health.broker_ok = True
        try:
            while not self.stop.requested:
                self.turn()
        finally:
            self.loop.close()

    def turn(self) -> None:
        assert self.loop is not None
        msgs = self.loop.poll(self.s.batch_max, self.s.batch_wait_ms / 1000)
        self.health.turned()
        now = self.clock_ms()
        by_role: dict[str, list[Message]] = defaultdict(list)
        for m in msgs:
            by_role[self._role(m.topic() or "")].append(m)
        for role, batch in by_role.items():
            self.counters[0].labels(role).inc(len(batch))
        self._repartition(by_role["source"])
        self._stage_one(by_role["join"])
        self._stage_two(by_role["partials"], now)
        if time.monotonic() - self.last_tick >= self.s.tick_ms / 1000:
            self.last_tick = time.monotonic()
            self._tick(now)
        if self.loop.commit(msgs):
            self.counters[1].inc()

    def _role(self, topic: str) -> str:
        names = self.s.internal
        return "join" if topic == names["join"] else (
            "partials" if topic == names["partials"] else "source")  # fmt: skip

    def _repartition(self, msgs: list[Message]) -> None:
        """Predictions and labels, re-keyed by id onto the join topic."""
        assert self.loop is not None
        join = self.s.internal["join"]
        for m in msgs:
            kind = "p" if m.topic() == self.s.predictions_topic else "l"
            try:
                body = orjson.loads(m.value() or b"")
                ident = body["id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self._invalid(m)
                continue
            if not isinstance(ident, str):
                self._invalid(m)
                continue
            self.loop.send(join, ident.encode(), orjson.dumps({"k": kind, "m": body}))

    def _invalid(self, m: Message) -> None:
        log.debug("unreadable message at %s[%s]@%s", m.topic(), m.partition(), m.offset())
        for jp in self.joins.values():  # counted once, by any owned partition
            jp.invalid += 1
            return

    def _stage_one(self, msgs: list[Message]) -> None:
        assert self.loop is not None
        by_part: dict[int, list[tuple[str, dict[str, Any], int]]] = defaultdict(list)
        for m in msgs:
            body = orjson.loads(m.value() or b"{}")
            by_part[m.partition() or 0].append((body["k"], body["m"], m.timestamp()[1]))
        for p, items in by_part.items():
            jp = self.joins.get(p)
            if jp is None:
                continue  # revoked inside this poll: the next owner re-reads it
            changes, windows = jp.apply(items)
            self._emit_one(jp, changes, windows)

    def _emit_one(self, jp: JoinPartition, changes: Changelog, windows: set[Any]) -> None:
        assert self.loop is not None
        state, partials = self.s.internal["join_state"], self.s.internal["partials"]
        for key, value in changes.items():
            self.loop.send(state, key.encode(), value, partition=jp.partition)
        for key, value in jp.partial_messages(windows):
            self.loop.send(partials, key.encode(), value)
        if "s" in changes:
            key, value = jp.stats_message()
            self.loop.send(partials, key.encode(), value)

    def _stage_two(self, msgs: list[Message], now: int) -> None:
        assert self.loop is not None
        by_part: dict[int, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for m in msgs:
            by_part[m.partition() or 0].append(((m.key() or b"").decode(),
                                                orjson.loads(m.value() or b"{}")))  # fmt: skip
        for p, items in by_part.items():
            gp = self.globals.get(p)
            if gp is None:
                continue
            changes, records, _ = gp.apply(items, now)
            for key, value in changes.items():
                self.loop.send(self.s.internal["global_state"], key.encode(), value, partition=p)
            for key, value in records:
                self.loop.send(self.s.metrics_topic, key.encode(), value)
            self.status.metrics(p, records)

    def _tick(self, now: int) -> None:
        assert self.loop is not None
        for jp in self.joins.values():
            changes, windows = jp.sweep(now)
            self._emit_one(jp, changes, windows)
        snapshots = []
        for p, gp in self.globals.items():
            changes, metric_records, alerts, snap = gp.tick(now)
            for key, value in changes.items():
                self.loop.send(self.s.internal["global_state"], key.encode(), value, partition=p)
            for key, value in metric_records:
                self.loop.send(self.s.metrics_topic, key.encode(), value)
            for key, value in alerts:
                self.loop.send(self.s.alerts_topic, key.encode(), value)
                log.warning("alert %s", value.decode())
            self.status.metrics(p, metric_records)
            self.status.alerts(p, alerts)
            if gp.stats:
                stats = stats_record(snap.join, snap.invalid, now)
                self.loop.send(self.s.stats_topic, b"all", stats)
                self.status.join_stats(p, stats)
            snapshots.append(snap)
        self.collector.update(merge_snapshots(snapshots))
        self.status.tick(now, self.globals)


def merge_snapshots(snaps: list[Snapshot]) -> Snapshot:
    """One snapshot for the gauges from every stage-two partition this instance owns."""
    out = Snapshot()
    for snap in snaps:
        out.figures.update(snap.figures)
        out.join = out.join.merge(snap.join)
        out.invalid += snap.invalid
    return out


def create_topics(s: MonitorSettings) -> None:
    compact = {"cleanup.policy": "compact"}
    names = s.internal
    work = {names["join"]: s.partitions, names["partials"]: s.partitions}
    kafka_io.create_topics(s.bootstrap, work, extra=s.kafka)
    kafka_io.create_topics(s.bootstrap, {names["join_state"]: s.partitions,
                                         names["global_state"]: s.partitions,
                                         s.metrics_topic: 1, s.stats_topic: 1},
                           config=compact, extra=s.kafka)  # fmt: skip
    kafka_io.create_topics(s.bootstrap, {s.alerts_topic: 1}, extra=s.kafka)


def run_monitor(
    s: MonitorSettings,
    rules: Sequence[AlertRule],
    registry: CollectorRegistry | None = None,
    stop: StopFlag = STOP,
) -> None:
    # A bad bundle is the user's mistake: refused before the broker.
    specs = load_specs(s.models, s.allow_pickle)
    registry = registry or CollectorRegistry()
    health = Health(stall_s=s.health_stall_s)
    health.model_loaded = True  # the monitor needs no model to run
    collector = MonitorCollector(registry)
    status = StatusFeed(rules, s.window_list, s.instance_id, s.partitions)
    server = (serve(s.metrics_port, registry, health, s.metrics_host, routes=status.routes())
              if s.metrics_port else None)  # fmt: skip
    try:  # SIGTERM during start-up: the wait polls the flag, the steps after it check it
        kafka_io.wait_for_broker(s.bootstrap, s.start_timeout_s, extra=s.kafka,
                                 stop=lambda: stop.requested)  # fmt: skip
        create_topics(s)
        seed(status, s, wall_ms())
        if stop.requested:
            return
        mon = Monitor(s, rules, specs, collector, health,
                      counters=loop_counters(registry), stop=stop, status=status)  # fmt: skip
        mon.run()
    finally:
        if server is not None:
            server.shutdown()
