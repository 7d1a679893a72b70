"""Command line: every subcommand, and the only place that exits.

Each handler returns an exit status; fatal ``ScoringError``s become one line on
stderr and status 2 (bad usage or setup) rather than a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from worker import kafka_local
from worker.errors import ScoringError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoring-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_kafka_local(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
