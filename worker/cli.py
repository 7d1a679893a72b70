"""Command line: every subcommand, and the only place that exits.

Each handler returns an exit status; fatal ``ScoringError``s become one line on
stderr and status 2 (bad usage or setup) rather than a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from worker import config, logs, shutdown
from worker.devtools import kafka_local
from worker.errors import ConfigError, ScoringError

Handler = Callable[[argparse.Namespace], int]


def _kafka_local(args: argparse.Namespace) -> int:
    b = kafka_local.LocalBroker(port=args.port, version=args.kafka_version)
    if args.state_dir:
        b = kafka_local.LocalBroker(port=args.port, version=args.kafka_version,
                                    state_root=Path(args.state_dir))  # fmt: skip
    if args.action == "start":
        r = kafka_local.start(b, timeout=args.timeout)
        if r.already_running:
            print(f"kafka-local: already running on {b.bootstrap} (pid {r.pid})")
        else:
            print(f"kafka-local: broker {b.version} ready on {b.bootstrap} in "
                  f"{r.ready_seconds:.1f}s (pid {r.pid}, state {b.state_dir})")  # fmt: skip
    elif args.action == "stop":
        stopped = kafka_local.stop(b)
        print("kafka-local: stopped" if stopped else "kafka-local: not running")
    elif args.action == "status":
        pid = kafka_local.running_pid(b)
        if pid is None:
            print(f"kafka-local: not running ({b.bootstrap})")
            return 1
        print(f"kafka-local: running on {b.bootstrap} (pid {pid}, state {b.state_dir})")
    elif args.action == "reset":
        kafka_local.reset(b)
        print(f"kafka-local: removed {b.state_dir}")
    return 0


def _add_kafka_local(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kafka-local", help="local single-node Apache Kafka broker (no Docker)")
    p.add_argument("action", choices=["start", "stop", "status", "reset"])
    p.add_argument("--port", type=int, default=9092,
                   help="client port (the KRaft controller uses port+1)")  # fmt: skip
    p.add_argument("--kafka-version", default=kafka_local.KAFKA_VERSION)
    p.add_argument("--state-dir", default=None, help="where data and logs live")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    p.set_defaults(handler=_kafka_local)


def _add_settings_flags(p: argparse.ArgumentParser, cls: type[Any] = config.Settings) -> None:
    """One flag per settings field; None means "not given", so lower layers show through."""
    p.add_argument("--config", type=Path, default=None, help="TOML settings file")
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka property for consumer and producer (repeatable)")  # fmt: skip
    for f in dataclasses.fields(cls):
        if f.name != "kafka":
            flag = "--" + f.name.replace("_", "-")
            doc = f.metadata.get("doc", "").replace("``", "").replace("%", "%%")
            p.add_argument(flag, dest=f.name, default=None,
                           help=f"{doc} (env SCORING_{f.name.upper()})")  # fmt: skip


def load_settings(args: argparse.Namespace) -> config.Settings:
    return config.load(args.config, os.environ, vars(args), args.kafka)


def setup_logging(level: str, kafka: Mapping[str, str] | None = None) -> None:
    """JSON lines on stderr; every secret-looking librdkafka value is redacted."""
    secrets = [v for k, v in (kafka or {}).items() if config.is_secret(k)]
    logs.setup(level, secrets)


def _run(args: argparse.Namespace) -> int:
    from worker.stream.app import run_worker

    s = load_settings(args)
    setup_logging(s.log_level, s.kafka)
    if not s.model:
        raise ConfigError("no model: give --model PATH (or SCORING_MODEL)")
    logging.getLogger("worker").info("starting", extra={"settings": s.masked()})
    totals = run_worker(s)
    print(f"scoring-worker run: {totals.consumed} consumed, {totals.scored} scored, "
          f"{totals.dead_lettered} dead-lettered")  # fmt: skip
    return 0


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="score events from Kafka until SIGTERM/SIGINT")
    _add_settings_flags(p)
    p.set_defaults(handler=_run)


def _train_demo(args: argparse.Namespace) -> int:
    from worker.devtools.demo import train_demo
    from worker.model.bundle import load_bundle

    path = train_demo(Path(args.out), seed=args.seed, n=args.rows, version=args.version)
    man = load_bundle(path).manifest
    shown = {k: round(v, 4) for k, v in man.metrics.items()}
    print(f"train-demo: wrote {man.name} {man.version} to {path} (holdout {shown})")
    return 0


def _add_train_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train-demo", help="train the demo fraud model and write its bundle")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rows", type=int, default=200_000, help="synthetic transactions to train on")
    p.add_argument("--version", default="1", help="model version written to model.json")
    p.set_defaults(handler=_train_demo)


def _produce_demo(args: argparse.Namespace) -> int:
    from worker.devtools.produce_demo import DemoTraffic, produce_demo
    from worker.kafka_io.config import Connection, Role, client_config

    traffic = DemoTraffic(topic=args.topic, count=args.count, rate=args.rate,
                          labels_topic=args.labels_topic, label_delay_s=args.label_delay,
                          drift_after=args.drift_after, seed=args.seed,
                          start_id=args.start_id, bad_every=args.bad_every)  # fmt: skip
    conn = Connection(args.bootstrap, config.parse_kafka_pairs(args.kafka, "--kafka"))
    conf = client_config(Role.PRODUCER, conn)
    r = produce_demo(traffic, conf)
    rate = r.events / r.seconds if r.seconds else 0.0
    print(f"produce-demo: {r.events} events ({r.drifted} drifted, {r.malformed} malformed), "
          f"{r.labels} labels "
          f"in {r.seconds:.1f}s ({rate:.0f} events/s)")  # fmt: skip
    return 0


def _add_produce_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("produce-demo", help="send demo transactions (and their labels)")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--topic", default="transactions")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=1000.0, help="events/s; 0 = as fast as possible")
    p.add_argument("--labels-topic", default=None, help="also send each event's true label")
    p.add_argument("--label-delay", type=float, default=0.0, help="seconds before a label")
    p.add_argument("--drift-after", type=int, default=None,
                   help="events after this many follow a drifted fraud pattern")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start-id", type=int, default=0, help="first event id number")
    p.add_argument("--bad-every", type=int, default=0,
                   help="make every N-th event malformed (0: none)")  # fmt: skip
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=_produce_demo)


def _score_file(args: argparse.Namespace) -> int:
    from worker.batch import score_file
    from worker.clock import wall_ms
    from worker.context import build_context

    s = load_settings(args)
    if not s.model:
        raise ConfigError("no model: give --model PATH (or SCORING_MODEL)")
    r = score_file(Path(args.input), Path(args.output), build_context(s), wall_ms())
    print(f"score-file: {r.rows} rows, {r.scored} scored, {r.rejected} rejected "
          f"(rejects in {args.output}.rejects.jsonl)")  # fmt: skip
    return 0


def _add_score_file(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score-file", help="score a JSONL or CSV file with the same pipeline")
    p.add_argument("input", help="events: .jsonl/.ndjson/.json (one per line) or .csv")
    p.add_argument("output", help="predictions as JSONL; rejects go to OUTPUT.rejects.jsonl")
    _add_settings_flags(p)
    p.set_defaults(handler=_score_file)


def _monitor(args: argparse.Namespace) -> int:
    from worker.monitor.alerts import DEFAULT_RULES, AlertRule, AlertRuleError, parse_rules
    from worker.monitor_app.app import run_monitor
    from worker.monitor_app.settings import MonitorSettings

    s = config.load_into(MonitorSettings, args.config, os.environ, vars(args), args.kafka,
                         tables=("alerts",))  # fmt: skip
    setup_logging(s.log_level, s.kafka)
    rules: tuple[AlertRule, ...] = DEFAULT_RULES
    if args.config is not None:
        table = config.read_toml(args.config).get("alerts")
        if table is not None:
            try:
                rules = parse_rules(table)
            except AlertRuleError as exc:
                raise ConfigError(f"{args.config}: {exc}") from exc
    logging.getLogger("worker").info("monitor starting", extra={"settings": s.masked()})
    run_monitor(s, rules)
    return 0


def _add_monitor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from worker.monitor_app.settings import MonitorSettings

    p = sub.add_parser("monitor", help="join labels; window metrics, drift and alerts")
    _add_settings_flags(p, MonitorSettings)
    p.set_defaults(handler=_monitor)


def _models(args: argparse.Namespace) -> int:
    from worker.model.store import ModelStore

    store = ModelStore(Path(args.store))
    if args.action == "list":
        for v in store.list():
            mark = "\tcurrent" if v.current else ""
            print(f"{v.name}\t{v.version}{mark}")
    elif args.action == "add":
        added = store.add(Path(args.bundle))
        print(f"models: added {added.name} {added.version} to {args.store}")
    elif args.action == "promote":
        path = store.promote(args.name, args.version)
        print(f"models: {args.name} current is now {args.version} ({path})")
    else:
        path = store.rollback(args.name)
        print(f"models: {args.name} rolled back to {path.name} ({path})")
    return 0


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="model store: list, add, promote, roll back bundles")
    actions = p.add_subparsers(dest="action", required=True)
    for action, help_text in (("list", "every stored version, the current one marked"),
                              ("add", "copy a bundle in under its manifest's name/version"),
                              ("promote", "make a stored version current"),
                              ("rollback", "make the previous current version current again")):
        a = actions.add_parser(action, help=help_text)
        a.add_argument("--store", required=True, help="store folder (STORE/<name>/<version>/)")
        if action == "add":
            a.add_argument("bundle", help="bundle folder (or its model.json)")
        elif action != "list":
            a.add_argument("name", help="model name (the manifest's name)")
        if action == "promote":
            a.add_argument("version", help="version to serve")
    p.set_defaults(handler=_models)  # fmt: skip


def _demo(args: argparse.Namespace) -> int:
    from worker.devtools import demo_run

    setup_logging("WARNING")
    return demo_run.main(args.bootstrap, Path(args.workdir), args.seconds, args.rate)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="train, run a worker, stream demo traffic, summarise")
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--workdir", default="demo-out", help="model and logs of the demo")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to stream")
    p.add_argument("--rate", type=float, default=2000.0, help="events per second")
    p.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoring-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_kafka_local(sub)
    _add_run(sub)
    _add_train_demo(sub)
    _add_produce_demo(sub)
    _add_score_file(sub)
    _add_monitor(sub)
    _add_models(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "monitor"):
        shutdown.install()  # first of all: a SIGTERM during start-up still exits cleanly
    handler: Handler = args.handler
    try:
        return handler(args)
    except ScoringError as exc:
        print(f"scoring-worker {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
