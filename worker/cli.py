"""Command line: every subcommand, and the only place that exits.

Each handler returns an exit status. A ``ScoringError`` becomes one line
``scoring-worker <command>: error: <what> (<hint>)`` on stderr and its
``exit_status`` (2: the user's mistake, 1: a failure at run time); anything else
is one line too, with the traceback only under ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from worker import config, logs, shutdown
from worker.cli_parser import (
    SETTINGS_ORDER,
    HelpFormatter,
    Parser,
    VersionAction,
    add_parser,
    add_settings_flags,
    bootstrap,
    float_min,
    int_range,
)
from worker.cli_tools import add_kafka_local, add_models, add_registry_local
from worker.errors import BatchInputError, ConfigError, ScoringError
from worker.mlflow_ref import check_mlflow_installed, is_mlflow_model, mlflow_secrets
from worker.monitor_app.settings import MonitorSettings
from worker.retrain.command import add_retrain
from worker.settings_common import LogFormat
from worker.shutdown import StopRequested
from worker.tracing_extra import record_tracer

Handler = Callable[[argparse.Namespace], int]
Sub: TypeAlias = "argparse._SubParsersAction[Parser]"
DESCRIPTION = """\
Score Kafka events with a scikit-learn model in real time, and watch the model's accuracy.

Start with the README's quick start. Every command has --help with its options, their
defaults and an example."""
NO_MODEL = "no model (give --model PATH: a bundle folder or a model store folder STORE/<name>)"


def load_settings(args: argparse.Namespace) -> config.Settings:
    return config.load(args.config, os.environ, vars(args), getattr(args, "kafka", []))


def setup_logging(s: config.Settings | MonitorSettings) -> None:
    """JSON lines (or text) on stderr; every secret-bearing librdkafka value is redacted."""
    mlflow = mlflow_secrets(getattr(s, "mlflow_tracking_uri", ""), os.environ)
    logs.setup(s.log_level, [*_secrets(s.kafka), *mlflow], s.log_format)


def _secrets(kafka: Mapping[str, str]) -> list[str]:
    return [v for k, v in kafka.items() if config.is_secret(k)]


def _check_kafka(confs: Iterable[Mapping[str, Any]], kafka: Mapping[str, str]) -> None:
    """Every librdkafka property checked by building each client once, connecting nowhere."""
    from worker.kafka_io import check_config

    for conf in confs:
        check_config(conf, _secrets(kafka))


def _run(args: argparse.Namespace) -> int:
    from worker import kafka_io
    from worker.stream.app import run_worker, tracing_type

    s = load_settings(args)
    if not s.model:
        raise ConfigError(NO_MODEL)
    if is_mlflow_model(s.model):
        check_mlflow_installed(s.model)
    tracing_type(s)  # one line before anything starts when its extra is missing
    _check_kafka([kafka_io.consumer_config(s), kafka_io.producer_config(s)], s.kafka)
    setup_logging(s)
    logging.getLogger("worker").info("starting", extra={"settings": s.masked()})
    if args.supervisor_fd is None:
        from worker.stream import processes

        count = processes.process_count(s.processes, processes.available_cores())
        if count > 1:
            status = processes.run_processes(s, args.raw_argv, count, shutdown.STOP)
            print(f"scoring-worker run: {count} worker processes stopped (exit {status})")
            return status
    totals = run_worker(s, report_fd=args.supervisor_fd)
    print(f"scoring-worker run: {totals.consumed} consumed, {totals.scored} scored, "
          f"{totals.dead_lettered} dead-lettered")
    return 0


def _add_run(sub: Sub) -> None:
    p = add_parser(sub, "run", "score events from Kafka until SIGTERM or SIGINT",
                   "  scoring-worker run --model models/fraud-demo --bootstrap 127.0.0.1:9092 \\\n"
                   "      --input-topic transactions --output-topic predictions "
                   "--metrics-host 127.0.0.1", SETTINGS_ORDER)
    add_settings_flags(p, config.Settings)
    # Set by the supervisor of --processes N on each child: where it reports its probes.
    p.add_argument("--supervisor-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=_run)


def _train_demo(args: argparse.Namespace) -> int:
    from worker.devtools.demo import train_demo
    from worker.model.bundle import load_bundle

    path = train_demo(Path(args.out), seed=args.seed, n=args.rows, version=args.version)
    man = load_bundle(path).manifest
    shown = {k: round(v, 4) for k, v in man.metrics.items()}
    print(f"train-demo: wrote {man.name} {man.version} to {path} (holdout {shown})")
    return 0


def _add_train_demo(sub: Sub) -> None:
    p = add_parser(sub, "train-demo", "train the demo fraud model and write its bundle",
                   "  scoring-worker train-demo --out build/fraud --version 1")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--seed", type=int, default=7, help="random seed of the synthetic data")
    p.add_argument("--rows", type=int_range(1000), default=200_000,
                   help="synthetic transactions to train on")
    p.add_argument("--version", default="1", help="model version written to model.json")
    p.set_defaults(handler=_train_demo)


def _produce_demo(args: argparse.Namespace) -> int:
    from worker.devtools.produce_demo import DemoTraffic, produce_demo
    from worker.kafka_io.config import Connection, Role, client_config

    traffic = DemoTraffic(topic=args.topic, count=args.count, rate=args.rate,
                          labels_topic=args.labels_topic, label_delay_s=args.label_delay,
                          drift_after=args.drift_after, seed=args.seed,
                          start_id=args.start_id, bad_every=args.bad_every)
    kafka = config.parse_kafka_pairs(args.kafka, "--kafka")
    conf = client_config(Role.PRODUCER, Connection(args.bootstrap, kafka))
    _check_kafka([conf], kafka)
    logs.setup("WARNING", _secrets(kafka), LogFormat.TEXT)
    r = produce_demo(traffic, conf)
    rate = r.events / r.seconds if r.seconds else 0.0
    print(f"produce-demo: {r.events} events ({r.drifted} drifted, {r.malformed} malformed), "
          f"{r.labels} labels in {r.seconds:.1f}s ({rate:.0f} events/s)")
    return 0


def _add_produce_demo(sub: Sub) -> None:
    p = add_parser(sub, "produce-demo", "send demo transactions (and their labels) to Kafka",
                   "  scoring-worker produce-demo --count 2000 --rate 500 --labels-topic labels")
    p.add_argument("--bootstrap", type=bootstrap, default="127.0.0.1:9092",
                   help="Kafka bootstrap servers, host:port[,host:port...]")
    p.add_argument("--topic", default="transactions", help="topic of the events")
    p.add_argument("--count", type=int_range(1), default=10_000, help="events to send")
    p.add_argument("--rate", type=float_min(0), default=1000.0,
                   help="events/s; 0 = as fast as possible")
    p.add_argument("--labels-topic", default=None, help="also send each event's true label")
    p.add_argument("--label-delay", type=float_min(0), default=0.0,
                   help="seconds before a label")
    p.add_argument("--drift-after", type=int_range(0), default=None,
                   help="events after this many follow a drifted fraud pattern")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--start-id", type=int_range(0), default=0, help="first event id number")
    p.add_argument("--bad-every", type=int_range(0), default=0,
                   help="make every N-th event malformed (0: none)")
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka property (repeatable)")
    p.set_defaults(handler=_produce_demo)


def _score_file(args: argparse.Namespace) -> int:
    from worker.batch import score_file
    from worker.clock import wall_ms
    from worker.context import build_context

    s = load_settings(args)
    source, out = Path(args.input), Path(args.output)
    if not source.is_file():
        raise BatchInputError(f"{source}: no such file (give the events to score, "
                              ".jsonl/.ndjson/.json or .csv)")
    if not out.parent.is_dir():
        raise BatchInputError(f"{out}: its folder {out.parent} does not exist (create it "
                              "first)")
    if not s.model:
        raise ConfigError(NO_MODEL)
    if not 0.0 <= args.max_reject_rate <= 1.0:
        raise ConfigError(f"--max-reject-rate must be in [0, 1], got {args.max_reject_rate}")
    setup_logging(s)
    try:
        r = score_file(source, out, build_context(s), wall_ms())
    except OSError as exc:
        raise BatchInputError(f"{exc.filename or source}: {exc.strerror or exc}") from None
    print(f"score-file: {r.rows} rows, {r.scored} scored, {r.rejected} rejected "
          f"(rejects in {args.output}.rejects.jsonl)")
    rate = r.rejected / r.rows if r.rows else 0.0
    if rate > args.max_reject_rate:
        print(f"scoring-worker score-file: {r.rejected} of {r.rows} rows rejected "
              f"({rate:.2%}), above --max-reject-rate {args.max_reject_rate:g}",
              file=sys.stderr)
        return 1
    return 0


def _add_score_file(sub: Sub) -> None:
    p = add_parser(sub, "score-file", "score a JSONL or CSV file with the worker's pipeline",
                   "  scoring-worker score-file events.jsonl scores.jsonl \\\n"
                   "      --model models/fraud-demo",
                   "Rows that cannot be scored go to OUTPUT.rejects.jsonl with their line and "
                   "reason.")
    p.add_argument("input", help="events: .jsonl/.ndjson/.json (one per line) or .csv")
    p.add_argument("output", help="predictions as JSONL; rejects go to OUTPUT.rejects.jsonl")
    p.add_argument("--max-reject-rate", type=float, default=0.0, metavar="SHARE",
                   help="exit 1 when the share of rejected rows is above this, in [0, 1] "
                        "(default 0: any rejected row fails the run)")
    add_settings_flags(p, config.Settings, batch_only=True, kafka=False)
    p.set_defaults(handler=_score_file)


def _monitor(args: argparse.Namespace) -> int:
    from worker.kafka_io.config import Role, client_config, connection, membership
    from worker.monitor.alerts import DEFAULT_RULES, AlertRule, AlertRuleError, parse_rules
    from worker.monitor.feature_alerts import (
        DEFAULT_FEATURE_RULES,
        FeatureRule,
        parse_feature_rules,
    )
    from worker.monitor.segments import (
        DEFAULT_SEGMENT_RULES,
        SegmentRule,
        parse_segment_rules,
    )
    from worker.monitor_app.app import run_monitor

    s = config.load_into(MonitorSettings, args.config, os.environ, vars(args), args.kafka,
                         tables=("alerts", "feature_alerts", "segment_alerts"))
    rules: tuple[AlertRule, ...] = DEFAULT_RULES
    feature_rules: tuple[FeatureRule, ...] = DEFAULT_FEATURE_RULES
    segment_rules: tuple[SegmentRule, ...] = DEFAULT_SEGMENT_RULES
    if args.config is not None:
        tables = config.read_toml(args.config)
        try:
            if tables.get("alerts") is not None:
                rules = parse_rules(tables["alerts"])
            if tables.get("feature_alerts") is not None:
                feature_rules = parse_feature_rules(tables["feature_alerts"])
            if tables.get("segment_alerts") is not None:
                segment_rules = parse_segment_rules(tables["segment_alerts"])
        except AlertRuleError as exc:
            raise ConfigError(f"{args.config}: {exc}") from exc
    record_tracer(s.tracing)  # one line before anything starts when its extra is missing
    conn = connection(s, s.instance_id)
    _check_kafka([client_config(Role.TX_CONSUMER, conn, member=membership(s)),
                  client_config(Role.TX_PRODUCER, conn)], s.kafka)
    setup_logging(s)
    logging.getLogger("worker").info("monitor starting", extra={"settings": s.masked()})
    run_monitor(s, rules, feature_rules=feature_rules, segment_rules=segment_rules)
    return 0


def _add_monitor(sub: Sub) -> None:
    p = add_parser(sub, "monitor", "join labels to predictions; window metrics, drift, alerts",
                   "  scoring-worker monitor --predictions-topic predictions --labels-topic "
                   "labels \\\n      --windows 5m,1h --models models/fraud-demo/1 "
                   "--metrics-host 127.0.0.1",
                   SETTINGS_ORDER + "\nAlert rules: [[alerts]] tables of the --config file "
                   "(docs: Monitoring, Alert rules).")
    add_settings_flags(p, MonitorSettings)
    p.set_defaults(handler=_monitor)


def _demo(args: argparse.Namespace) -> int:
    from worker.devtools import demo_run

    logs.setup("WARNING", fmt=LogFormat.TEXT)
    if args.drift:
        from worker.devtools import demo_loop

        plan = demo_loop.LoopPlan(rate=args.rate or demo_loop.LoopPlan.rate)
        return demo_loop.main(args.bootstrap, Path(args.workdir), plan)
    return demo_run.main(args.bootstrap, Path(args.workdir), args.seconds, args.rate or 2000.0)


def _add_demo(sub: Sub) -> None:
    p = add_parser(sub, "demo", "train, run a worker and a monitor, stream demo traffic, "
                   "summarise", "  scoring-worker demo --seconds 20 --rate 2000\n"
                   "  scoring-worker demo --drift   # the model loop, about 2 minutes")
    p.add_argument("--bootstrap", type=bootstrap, default="127.0.0.1:9092",
                   help="Kafka bootstrap servers")
    p.add_argument("--workdir", default="demo-out", help="model and logs of the demo")
    p.add_argument("--seconds", type=float_min(0, strict=True), default=20.0,
                   help="how long to stream")
    p.add_argument("--rate", type=float_min(0, strict=True), default=None,
                   help="events per second (2000; 3000 with --drift)")
    p.add_argument("--drift", action="store_true",
                   help="the model loop instead: drift, alert, retrain, promote, recover")
    p.set_defaults(handler=_demo)


def build_parser() -> Parser:
    parser = Parser(prog="scoring-worker", description=DESCRIPTION,
                    formatter_class=HelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_kafka_local, add_registry_local, _add_run, _add_train_demo,
                _add_produce_demo,
                _add_score_file, _add_monitor, add_models, add_retrain, _add_demo):
        add(sub)
    return parser


def _debug(args: argparse.Namespace) -> bool:
    level = getattr(args, "log_level", None) or os.environ.get("SCORING_LOG_LEVEL", "")
    return str(level).strip().upper() == "DEBUG"


def _fail(command: str, what: str) -> None:
    line = " ".join(what.split())  # one line, whatever the message held
    print(f"scoring-worker {command}: error: {line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said by the subcommand, which knows which options it has
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)  # run --processes' children
    if args.command in ("run", "monitor"):
        shutdown.install()  # first of all: a SIGTERM during start-up still exits cleanly
    handler: Handler = args.handler
    try:
        return handler(args)
    except ScoringError as exc:
        if _debug(args):
            traceback.print_exc()
        text = str(exc).rstrip()
        _fail(args.command, text if text.endswith(")") else f"{text} ({exc.hint})")
        return exc.exit_status
    except StopRequested:
        logging.getLogger("worker").info("stopped during start-up")
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, or a failure nothing above foresaw: still one line
        if _debug(args):
            traceback.print_exc()
        _fail(args.command, f"unexpected {type(exc).__name__}: {exc} (run with --log-level "
              "DEBUG for the traceback, and please report it)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
