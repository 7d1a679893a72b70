"""The tool commands of the command line: the local broker and registry, the model store.

Handlers return an exit status; cli.main turns errors into one line and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, TypeAlias

from worker.cli_parser import HelpFormatter, Parser, add_parser, float_min, int_range
from worker.devtools import kafka_local, registry_local
from worker.errors import ConfigError, ModelStoreError

Sub: TypeAlias = "argparse._SubParsersAction[Parser]"


def kafka_local_cmd(args: argparse.Namespace) -> int:
    b = kafka_local.LocalBroker(port=args.port, version=args.kafka_version)
    if args.state_dir:
        b = dataclasses.replace(b, state_root=Path(args.state_dir))
    if args.action == "start":
        security = kafka_local.Security.parse(args.sasl, args.tls)
        r = kafka_local.start(b, timeout=args.timeout, security=security, progress=_progress)
        if r.already_running:
            print(f"kafka-local: already running on {b.bootstrap} (pid {r.pid})")
        else:
            print(f"kafka-local: broker {b.version} ready on {b.bootstrap} in "
                  f"{r.ready_seconds:.1f}s (pid {r.pid}, state {b.state_dir})")
        for line in kafka_local.client_hints(b, security):
            print(f"kafka-local: {line}")
    elif args.action == "stop":
        print("kafka-local: stopped" if kafka_local.stop(b) else "kafka-local: not running")
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


def _progress(line: str) -> None:
    print(f"kafka-local: {line}", file=sys.stderr, flush=True)


def add_kafka_local(sub: Sub) -> None:
    p = add_parser(sub, "kafka-local", "a local single-node Apache Kafka broker (no Docker)",
                   "  scoring-worker kafka-local start            # 127.0.0.1:9092\n"
                   "  scoring-worker kafka-local start --port 19092 --sasl alice:secret --tls",
                   "The first start downloads Apache Kafka (about 60 MB) through Maven, which "
                   "takes\none to three minutes; later starts take about 10 s. Needs Java 17+ "
                   "and Maven.")
    p.add_argument("action", choices=["start", "stop", "status", "reset"])
    p.add_argument("--port", type=int_range(1, 65533), default=9092,
                   help="client port; the KRaft controller uses port+1, --sasl/--tls port+2")
    p.add_argument("--kafka-version", default=kafka_local.KAFKA_VERSION)
    p.add_argument("--state-dir", default=None, help="where data and logs live "
                   "(default: ~/.local/state/scoring-worker)")
    p.add_argument("--timeout", type=float_min(0, strict=True), default=120.0,
                   help="seconds to wait for readiness")
    p.add_argument("--sasl", default=None, metavar="USER:PASSWORD",
                   help="also listen with SASL/SCRAM-SHA-512 for this user on port+2")
    p.add_argument("--tls", action="store_true",
                   help="also listen with TLS on port+2 (a throwaway CA and certificate)")
    p.set_defaults(handler=kafka_local_cmd)


def registry_local_cmd(args: argparse.Namespace) -> int:
    r = registry_local.LocalRegistry(port=args.port)
    if args.state_dir:
        r = dataclasses.replace(r, state_root=Path(args.state_dir))
    say = lambda line: print(f"registry-local: {line}", file=sys.stderr, flush=True)  # noqa: E731
    if args.action == "start":
        res = registry_local.start(r, timeout=args.timeout, progress=say)
        if res.already_running:
            print(f"registry-local: already running at {r.url} (pid {res.pid})")
        else:
            print(f"registry-local: Apicurio Registry {r.version} ready at {r.url} in "
                  f"{res.ready_seconds:.1f}s (pid {res.pid}, state {r.state_dir})")
    elif args.action == "stop":
        print("registry-local: stopped" if registry_local.stop(r) else
              "registry-local: not running")
    elif args.action == "status":
        pid = registry_local.running_pid(r)
        if pid is None:
            print(f"registry-local: not running ({r.url})")
            return 1
        print(f"registry-local: running at {r.url} (pid {pid}, state {r.state_dir})")
    elif args.action == "reset":
        registry_local.reset(r)
        print(f"registry-local: removed {r.state_dir}")
    return 0


def add_registry_local(sub: Sub) -> None:
    p = add_parser(sub, "registry-local", "a local schema registry: Apicurio (no Docker)",
                   "  scoring-worker registry-local start          # 127.0.0.1:8081\n"
                   "  scoring-worker run --input-format avro "
                   "--schema-registry http://127.0.0.1:8081/apis/ccompat/v7 ...",
                   "The first start downloads Apicurio Registry (about 142 MB) through Maven; "
                   "later\nstarts take about 5 s. Schemas live in memory: a restart forgets "
                   "them. Needs\nJava 17+ and Maven.")
    p.add_argument("action", choices=["start", "stop", "status", "reset"])
    p.add_argument("--port", type=int_range(1, 65535), default=8081, help="HTTP port")
    p.add_argument("--state-dir", default=None, help="where logs and the pid file live "
                   "(default: ~/.local/state/scoring-worker)")
    p.add_argument("--timeout", type=float_min(0, strict=True), default=120.0,
                   help="seconds to wait for readiness")
    p.set_defaults(handler=registry_local_cmd)


def models_cmd(args: argparse.Namespace) -> int:
    from worker import model_control
    from worker.model.store import ModelStore, is_model_folder

    store = ModelStore(Path(args.store), allow_pickle=getattr(args, "allow_pickle", False))
    if args.action != "add" and not store.root.is_dir():
        raise ModelStoreError(f"--store {store.root}: no such folder (the store is the folder "
                              "`models add --store` created)")
    target = _control_topic(args)
    if args.action == "list":
        for v in store.list():
            print(f"{v.name}\t{v.version}{chr(9) + 'current' if v.current else ''}")
    elif args.action == "add":
        added = store.add(Path(args.bundle))
        first = not is_model_folder(store.folder(added.name))
        note = ""
        if args.promote or first:
            store.promote(added.name, added.version)
            note = " (the first version: now current)" if first else "; now current"
        print(f"models: added {added.name} {added.version} to {args.store}{note}")
    elif args.action == "promote":
        pointer = model_control.promote(store, args.name, args.version, target)
        print(f"models: {args.name} current is now {args.version} "
              f"({store.version_path(args.name, args.version)})")
        _published(args, pointer.version, pointer.sequence)
    elif args.action == "rollback":
        pointer = model_control.rollback(store, args.name, target)
        print(f"models: {args.name} rolled back to {pointer.version} "
              f"({store.version_path(args.name, pointer.version)})")
        _published(args, pointer.version, pointer.sequence)
    else:
        _shadow(args, store, target)
    return 0


def _shadow(args: argparse.Namespace, store: Any, target: Any) -> None:
    from worker import model_control

    if target is None:
        raise ConfigError("models shadow needs --control-topic: the workers learn of their "
                          "shadow model there")
    if (args.version is None) == (not args.stop):
        raise ConfigError("models shadow takes a VERSION or --stop, one of them")
    sequence = model_control.shadow(store, args.name, args.version, target)
    what = f"shadow model {args.version}" if args.version else "no shadow model (stop)"
    print(f"models: published {args.name} {what} (shadow sequence {sequence}) to "
          f"{args.control_topic}")


def _control_topic(args: argparse.Namespace) -> Any:
    """Where --control-topic instructions go (None without one)."""
    if not getattr(args, "control_topic", ""):
        return None
    from worker.config import parse_kafka_pairs
    from worker.kafka_io.config import Connection
    from worker.model_control import ControlTopic

    conn = Connection(args.bootstrap, parse_kafka_pairs(args.kafka, "--kafka"))
    return ControlTopic(args.control_topic, conn)


def _published(args: argparse.Namespace, version: str, sequence: int) -> None:
    if args.control_topic:
        print(f"models: published {args.name} {version} (sequence {sequence}) "
              f"to {args.control_topic}")


def add_models(sub: Sub) -> None:
    p = add_parser(sub, "models", "model store: list, add, promote, roll back bundles",
                   "  scoring-worker models add --store models build/fraud\n"
                   "  scoring-worker models list --store models")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text, example in (
        ("list", "every stored version, the current one marked", "list --store models"),
        ("add", "copy a bundle in under its manifest's name and version; the first version "
         "of a model becomes current", "add --store models build/fraud --promote"),
        ("promote", "make a stored version current", "promote --store models fraud-demo 2"),
        ("rollback", "make the previous current version current again",
         "rollback --store models fraud-demo"),
        ("shadow", "make a stored version every worker's shadow model (--stop: none), "
         "through the control topic", "shadow --store models fraud-demo 3 --control-topic "
         "model-control"),
    ):
        a = actions.add_parser(action, help=help_text, description=help_text,
                               epilog=f"example:\n  scoring-worker models {example}",
                               formatter_class=HelpFormatter)
        a.set_defaults(parser=a)
        a.add_argument("--store", required=True, help="store folder (STORE/<name>/<version>/)")
        if action == "add":
            a.add_argument("bundle", help="bundle folder (or its model.json)")
            a.add_argument("--promote", action="store_true",
                           help="make the added version current")
        elif action != "list":
            a.add_argument("name", help="model name (the manifest's name)")
        if action == "promote":
            a.add_argument("version", help="version to serve")
        if action == "shadow":
            a.add_argument("version", nargs="?", default=None,
                           help="version to score every batch with too")
            a.add_argument("--stop", action="store_true", help="stop shadow scoring")
        if action != "list":
            a.add_argument("--allow-pickle", action="store_true",
                           help="load .joblib (pickle) bundles: unpickling runs any code "
                                "the file holds; the sha256 only detects corruption")
        if action in ("promote", "rollback", "shadow"):
            a.add_argument("--control-topic", default="",
                           help="also publish the instruction, with its sequence, to this "
                                "model-control topic (every worker follows it; shadow: "
                                "required)")
            a.add_argument("--bootstrap", default="127.0.0.1:9092",
                           help="Kafka bootstrap servers for --control-topic")
            a.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                           help="librdkafka property for --control-topic (repeatable)")
    p.set_defaults(handler=models_cmd)
