"""``scoring-worker retrain``: its flags and its output (cli.py registers it and exits)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from worker.cli_parser import SETTINGS_ORDER, Parser, add_parser, add_settings_flags
from worker.retrain.settings import RegisterIn, RetrainSettings

SUMMARY = "retrain on a time range of labeled events; compare with the champion; promote"
EXAMPLE = """\
  scoring-worker retrain --config retrain.toml --last 2h
  scoring-worker retrain --config retrain.toml --from 2026-11-27T10:00Z \\
      --to 2026-11-27T12:00Z --promote-if-better
  scoring-worker retrain --config retrain.toml --last 2h --register mlflow \\
      --model models:/fraud@champion --mlflow-tracking-uri http://mlflow:5000 \\
      --promote-if-better"""
MORE = SETTINGS_ORDER + """
The promotion policy is the [policy] table of the --config file (docs/lifecycle/retrain.md).
Bad input (no events in the range, no labeled rows, one class only) is one line, exit 2."""


def add_retrain(sub: argparse._SubParsersAction[Parser]) -> None:
    p = add_parser(sub, "retrain", SUMMARY, EXAMPLE, MORE)
    p.add_argument("--from", dest="range_from", metavar="TIME", default=None,
                   help="range start: epoch ms or ISO 8601 (no zone: UTC)")
    p.add_argument("--to", dest="range_to", metavar="TIME", default=None,
                   help="range end, exclusive (default: now)")
    p.add_argument("--last", metavar="DURATION", default=None,
                   help="range: this long before --to (e.g. 30m, 2h, 1d)")
    p.add_argument("--promote-if-better", action="store_true",
                   help="apply the policy: promote the candidate (store pointer or MLflow "
                        "alias, and control topic) or keep the champion; publish the decision "
                        "record")
    p.add_argument("--shadow", action="store_true",
                   help="make the candidate every worker's shadow model (control topic) "
                        "instead; promote it later with `models promote`")
    p.add_argument("--candidate-version", default=None, metavar="VERSION",
                   help="the candidate's version in the store (default: one more than the "
                        "highest; MLflow numbers its own)")
    add_settings_flags(p, RetrainSettings)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from worker import config, logs
    from worker.clock import wall_ms
    from worker.errors import ConfigError
    from worker.kafka_io import check_config
    from worker.kafka_io.config import Connection, Role, client_config
    from worker.mlflow_ref import check_mlflow_installed, mlflow_secrets
    from worker.retrain.job import RetrainRequest, run_retrain
    from worker.retrain.policy import PolicyError, parse_policy
    from worker.retrain.settings import time_range
    from worker.tracing_extra import record_tracer

    s = config.load_into(RetrainSettings, args.config, os.environ, vars(args), args.kafka,
                         tables=("policy",))
    s.check()
    if s.register is RegisterIn.MLFLOW:
        check_mlflow_installed(s.model)
    record_tracer(s.tracing)  # one line before the job when its extra is missing
    secrets = [v for k, v in s.kafka.items() if config.is_secret(k)]
    secrets += mlflow_secrets(s.mlflow_tracking_uri, os.environ)
    conn = Connection(s.bootstrap, dict(s.kafka))
    # Every librdkafka property checked up front, by building each client once.
    check_config(client_config(Role.RANGE, conn, fixed={"group.id": "retrain"}), secrets)
    check_config(client_config(Role.PRODUCER, conn), secrets)
    logs.setup(s.log_level, secrets, s.log_format)
    try:
        table = config.read_toml(args.config).get("policy") if args.config else None
        policy = parse_policy(table)
    except PolicyError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    now = wall_ms()
    window = time_range(args.range_from, args.range_to, args.last, now)
    result = run_retrain(RetrainRequest(s, policy, window, args.promote_if_better, args.shadow,
                                        args.candidate_version), now)
    print(report(result, s.input_topic, window.describe()))
    return 0
def report(result: Any, topic: str, window: str) -> str:
    """What a run prints: the data, the table, the policy's verdict, what was done."""
    c, n = result.compared, result.counts
    rejected = ", ".join(f"{k} {v}" for k, v in n["rejected"].items()) or "none"
    coverage = f"{n['label_coverage']:.1%}" if n["label_coverage"] is not None else "-"
    lines = [
        f"retrain {c.model}: champion {c.champion_version} vs candidate {c.candidate_version}, "
        f"{topic} {window}",
        f"  events {n['events']:,} read; failed validation: {rejected}; duplicates "
        f"{n['duplicates']:,}; without a label {n['unlabeled']:,}; bad labels "
        f"{n['bad_labels']:,}",
        f"  labeled {n['labeled']:,} (coverage {coverage}): train {n['train']:,} older "
        f"rows, holdout {n['holdout']:,} newest rows",
        "",
        result.table,
        "",
        f"policy: {result.decision.summary()}",
        f"action: {_action(result)}",
    ]
    return "\n".join(lines)


def _action(result: Any) -> str:
    c = result.compared
    return {
        "promoted": f"promoted {c.model} {c.candidate_version} (sequence {result.sequence}: "
                    "store pointer or MLflow alias, and control topic when given); decision "
                    "record published",
        "kept": f"kept {c.model} {c.champion_version}; candidate {c.candidate_version} stays "
                f"at {result.candidate_at}; decision record published",
        "shadowed": f"candidate {c.candidate_version} is now the workers' shadow model "
                    f"(shadow sequence {result.sequence}); decision record published",
        "none": f"candidate {c.candidate_version} added at {result.candidate_at}; nothing "
                "promoted (--promote-if-better applies the policy)",
    }[result.action]
