"""The command line's conventions: one-line errors, help with defaults and examples,
flags generated from the settings declarations, ``--version``.

Every mistake argparse finds is one line ``scoring-worker <command>: error: <what>
(<hint>)`` and exit status 2, like the mistakes the commands find themselves.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from worker import __version__
from worker.settings_rules import Spec, host_port_list, specs

EXIT_STATUS = """\
exit status: 0 done (or stopped by SIGTERM/SIGINT); 2 a mistake in the command, its
settings or its files (one line on stderr says which); 1 a failure at run time: broker
unreachable or lost past its timeout, authentication or TLS refused."""

SETTINGS_ORDER = """\
settings come from, lowest precedence first: their defaults < --config FILE (TOML) <
SCORING_<NAME> environment variables < flags. An unknown TOML key or SCORING_* variable
is an error."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and shows each option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default in (None, False, [], argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


def add_parser(sub: argparse._SubParsersAction[Parser], name: str, summary: str,
               example: str, more: str = "") -> Parser:
    """A subcommand with its one-line summary, description and example."""
    epilog = f"example:\n{example}\n\n{more + chr(10) * 2 if more else ''}{EXIT_STATUS}"
    p: Parser = sub.add_parser(name, help=summary, description=summary, epilog=epilog,
                               formatter_class=HelpFormatter)
    p.set_defaults(parser=p)
    return p


def setting_help(spec: Spec) -> str:
    """The setting's documentation, what it accepts, its default and its variable."""
    parts = [spec.rule.describe(spec.kind)]
    if not spec.computed:
        parts.append(f"default: {spec.default if spec.default != '' else 'empty'}")
    parts.append(f"env {spec.env}")
    text = f"{spec.rule.doc.replace('``', '')} [{'; '.join(p for p in parts if p)}]"
    return text.replace("%", "%%")


def add_settings_flags(p: argparse.ArgumentParser, cls: type[Any], batch_only: bool = False,
                       kafka: bool = True) -> None:
    """One flag per declared setting (``batch_only``: those score-file uses); a value of
    None means "not given", so the lower layers show through."""
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML settings file (keys: the flags' names with underscores)")
    if kafka:
        p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                       help="librdkafka property for every client, e.g. "
                       "security.protocol=SASL_SSL (repeatable; env SCORING_KAFKA)")
    group = p.add_argument_group("settings")
    for spec in specs(cls).values():
        if batch_only and not spec.rule.batch:
            continue
        metavar = {int: "N", float: "SECONDS" if spec.name.endswith("_s") else "X",
                   bool: "BOOL"}.get(spec.kind, spec.name.split("_")[-1].upper())
        group.add_argument(spec.flag, dest=spec.name, default=None, metavar=metavar,
                           help=setting_help(spec))


# -- argument types for the commands' own (non-settings) options ------------------------------


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            top = f" to {high}" if high is not None else " or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}{top})")
        return value

    return parse


def float_min(low: float, strict: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"{text} must be {'above' if strict else 'at least'} {low:g}")
        return value

    return parse


def bootstrap(text: str) -> str:
    try:
        return host_port_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc} (host:port, e.g. 127.0.0.1:9092)"
                                         ) from None


class VersionAction(argparse.Action):
    """``--version``: the package and what it runs on, the things a bug report needs."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of scoring-worker, Python, scikit-learn "
                         "and librdkafka, and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        import sklearn

        from worker.kafka_io import versions

        kafka = versions()
        print(f"scoring-worker {__version__} (Python {platform.python_version()}, "
              f"scikit-learn {sklearn.__version__}, confluent-kafka {kafka['confluent-kafka']}, "
              f"librdkafka {kafka['librdkafka']})")
        sys.exit(0)
