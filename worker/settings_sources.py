"""Where settings come from, for every command: a TOML file, ``SCORING_*`` variables and
flags merged by precedence into a settings dataclass (``load_into``), librdkafka
properties beside them, and how secrets are masked in logs. What each setting is and
accepts is declared with the settings classes (worker/config.py and the others), checked
by worker/settings_rules.py.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from worker.errors import ConfigError
from worker.mlflow_ref import masked_uri
from worker.settings_rules import parse, specs
from worker.wire_settings import SECRET_SETTINGS

T = TypeVar("T")
#: Property names of librdkafka that carry a secret (or may: a JAAS or OAuth config).
SECRET_MARKERS: Final = ("password", "secret", "token", "key", "credential", "passphrase",
                         "jaas", "oauthbearer.config")
#: Settings classes whose ``SCORING_*`` variables are known (``register``).
_REGISTERED: list[type[Any]] = []


def register(cls: type[T]) -> type[T]:
    """Class decorator of a settings class: its variables become known to every command."""
    _REGISTERED.append(cls)
    return cls


def masked(settings: Any) -> dict[str, Any]:
    """Settings (a dataclass with a ``kafka`` mapping) as a dict for logs, with secret
    settings and secret-bearing librdkafka values hidden."""
    out = {k: "***" if v and k in SECRET_SETTINGS else v
           for k, v in dataclasses.asdict(settings).items()}
    out["kafka"] = {k: ("***" if is_secret(k) else v) for k, v in settings.kafka.items()}
    if out.get("mlflow_tracking_uri"):
        out["mlflow_tracking_uri"] = masked_uri(out["mlflow_tracking_uri"])
    return out


def is_secret(key: str) -> bool:
    """Whether a librdkafka property carries a secret, by its name: ``sasl.password``,
    ``ssl.key.password``, ``ssl.keystore.password``, ``ssl.key.pem``, ``ssl_key``,
    ``sasl.oauthbearer.config``, ``sasl.oauthbearer.client.secret``,
    ``sasl.oauthbearer.assertion.private.key.pem`` and ``.passphrase``, any
    ``*.jaas.config``. Paths (``*.location``) are not secrets."""
    k = key.lower()
    return any(m in k for m in SECRET_MARKERS) and not k.endswith(".location")


def parse_kafka_pairs(pairs: list[str] | str, source: str) -> dict[str, str]:
    """``key=value`` items (a list, or a ``;``-separated string) -> dict."""
    items = pairs.split(";") if isinstance(pairs, str) else pairs
    out: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            shown = key.strip() if sep else item
            raise ConfigError(f"{source} {shown!r}: expected KEY=VALUE "
                              "(a librdkafka property, for example security.protocol=SSL)")
        out[key.strip()] = value.strip()
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None


def _kafka_table(table: Any, path: Path) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: kafka must be a table ([kafka] with \"key\" = value lines)")
    out = {}
    for k, v in table.items():
        if isinstance(v, dict | list):
            raise ConfigError(f"{path}: [kafka] {k}: expected a single value (quote the key: "
                              f'"{k}.…" = value)')
        out[str(k)] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]}?" if close else "see --help for the settings"


def from_toml(path: Path, cls: type[Any],
              tables: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings (typed and checked) and the [kafka] table of a TOML file; ``tables`` are
    other tables the caller reads itself (the monitor's [[alerts]])."""
    data = read_toml(path)
    kafka = _kafka_table(data.pop("kafka", {}), path)
    for name in tables:
        data.pop(name, None)
    known = specs(cls)
    values = {}
    for key, raw in data.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r} ({_suggest(key, known)})")
        values[key] = parse(known[key], raw, f"{key} = {raw!r} in {path}")
    return values, kafka


def _known_env(cls: type[Any]) -> set[str]:
    return {spec.env for c in {cls, *_REGISTERED} for spec in specs(c).values()}


def from_env(env: Mapping[str, str], cls: type[Any]
             ) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings of ``cls`` from ``SCORING_*`` variables; an unknown variable is an error."""
    mine = {spec.env: spec for spec in specs(cls).values()}
    known = _known_env(cls) | {"SCORING_KAFKA"}
    values = {}
    for var, raw in sorted(env.items()):
        if not var.startswith("SCORING_") or var.startswith("SCORING_TEST_"):
            continue
        if var in mine:
            values[mine[var].name] = parse(mine[var], raw, f"{var}={raw!r}")
        elif var not in known:
            raise ConfigError(f"{var}: unknown setting ({_suggest(var, known)})")
    kafka = parse_kafka_pairs(env.get("SCORING_KAFKA", ""), "SCORING_KAFKA")
    return values, kafka


def from_flags(flags: Mapping[str, Any], cls: type[Any]) -> dict[str, Any]:
    """Settings of ``cls`` given as flags (a value of None: not given)."""
    return {name: parse(spec, flags[name], f"{spec.flag} {flags[name]}")
            for name, spec in specs(cls).items() if flags.get(name) is not None}


def load_into(
    cls: type[T],
    config_file: Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, Any],
    kafka_flags: list[str] | None = None,
    tables: tuple[str, ...] = (),
) -> T:
    """Merge every source by precedence into ``cls``, a settings dataclass with a
    ``kafka`` mapping field; every value is checked, naming its source on failure."""
    merged: dict[str, Any] = {}
    kafka: dict[str, str] = {}
    layers = [from_toml(config_file, cls, tables)] if config_file else []
    layers.append(from_env(env, cls))
    layers.append((from_flags(flags, cls), parse_kafka_pairs(kafka_flags or [], "--kafka")))
    for values, kafka_values in layers:
        merged.update(values)
        kafka.update(kafka_values)
    for key, value in kafka.items():
        if any(ord(c) < 32 for c in key + value):
            raise ConfigError(f"librdkafka property {key!r}: contains a control character")
    return cls(**merged, kafka=kafka)  # type: ignore[call-arg]
