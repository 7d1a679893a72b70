"""How a setting is declared and checked: type, range, choices, and a message that names it.

A setting is a dataclass field made by ``setting(default, doc, ...)``; the rule it carries
(``ge``/``gt``/``le`` bounds, ``choices`` or a ``check`` function) is applied to every value
whatever its source: a TOML key, a ``SCORING_*`` variable, a flag or a keyword argument.
Errors name the source as the user wrote it (``--batch-max -3``, ``SCORING_BATCH_MAX=-3``,
``batch_max = -3 in w.toml``) and say what is allowed, in one line.

A setting's type is int, float, str, bool or a ``StrEnum`` (its values are the choices; the
text is parsed into the member). ``specs(cls)`` enumerates a settings class's declarations
(name, type, default, range or choices, doc): the CLI's flags, the loader and the references
are all made from it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Final, get_type_hints

from worker.errors import ConfigError

TRUE: Final = frozenset({"true", "1", "yes"})
FALSE: Final = frozenset({"false", "0", "no"})
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_INT_RE: Final = re.compile(r"[+-]?[0-9][0-9_]*")


@dataclass(frozen=True, slots=True)
class Rule:
    """What a setting accepts. ``check`` gets the typed value and returns it (possibly
    normalised) or raises ValueError with what is wrong."""

    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    allowed: str = ""  # how the help and the errors describe the accepted values
    batch: bool = False  # also a setting of score-file (batch mode)

    def describe(self, kind: type) -> str:
        if self.allowed:
            return self.allowed
        if self.choices:
            return "one of " + ", ".join(self.choices)
        noun = {int: "a whole number", float: "a number", bool: "true or false"}.get(kind, "")
        ge, gt, le = (_num(x) if x is not None else None for x in (self.ge, self.gt, self.le))
        if ge and le:
            bounds = f"{ge} to {le}"
        elif gt and le:
            bounds = f"above {gt}, at most {le}"
        else:
            bounds = (f"at least {ge}" if ge else f"above {gt}" if gt else
                      f"at most {le}" if le else "")
        return ", ".join(p for p in (noun, bounds) if p)


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def setting(
    default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
    le: float | None = None, choices: tuple[str, ...] | None = None,
    check: Callable[[Any], Any] | None = None, allowed: str = "", batch: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A settings field: its default, its documentation (the flag's help too) and its rule.

    ``batch=True``: score-file has this setting too. ``factory``: a default computed at
    construction (a host name) instead of ``default``. A ``StrEnum`` member as the default
    makes its enum's values the choices; the field keeps the plain value (what a TOML file,
    the help and the Helm schema show), which ``validate`` turns into the member.
    """
    if isinstance(default, StrEnum):
        choices, default = tuple(m.value for m in type(default)), default.value
    rule = Rule(doc, ge, gt, le, choices, check, allowed, batch)
    meta = {"doc": doc, "rule": rule}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Spec:
    """One declared setting of a settings class."""

    name: str
    kind: type  # int, float, str, bool or a StrEnum
    rule: Rule
    default: Any  # the plain value (an enum's text); None when computed at construction
    computed: bool = False

    @property
    def doc(self) -> str:
        return self.rule.doc

    @property
    def value_type(self) -> type:
        """The type of the value as written in TOML or an environment (str for an enum)."""
        return str if issubclass(self.kind, Enum) else self.kind

    @property
    def allowed(self) -> str:
        """What the setting accepts, in words: its range or its choices."""
        return self.rule.describe(self.value_type)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SCORING_" + self.name.upper()


_KINDS: Final = {"int": int, "float": float, "str": str, "bool": bool}


_SPECS: dict[type[Any], dict[str, Spec]] = {}


def specs(cls: type[Any]) -> dict[str, Spec]:
    """The declared settings of ``cls`` (every field but the ``kafka`` mapping)."""
    if cls in _SPECS:
        return _SPECS[cls]
    hints = get_type_hints(cls)
    out: dict[str, Spec] = {}
    for f in dataclasses.fields(cls):
        if f.name == "kafka":
            continue
        kind = hints[f.name]
        if kind not in _KINDS.values() and not _is_enum(kind):
            raise TypeError(f"setting {cls.__name__}.{f.name}: type {kind} is not supported")
        rule = f.metadata.get("rule") or Rule(f.metadata.get("doc", ""))
        computed = f.default is dataclasses.MISSING
        default = None if computed else f.default
        out[f.name] = Spec(f.name, kind, rule, default, computed)
    _SPECS[cls] = out
    return out


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, StrEnum)


def parse(spec: Spec, raw: Any, where: str) -> Any:
    """``raw`` (a TOML value, or the text of a variable or a flag) as the setting's type,
    checked against its rule; ConfigError naming ``where`` otherwise."""
    try:
        value = _convert(spec.kind, raw)
        return _apply(spec.rule, value)
    except ValueError as exc:
        allowed = spec.allowed
        hint = f" ({spec.name}: {allowed})" if allowed else ""
        raise ConfigError(f"{where}: {exc}{hint}") from None


def validate(obj: Any) -> None:
    """Check every setting of a constructed settings object (``__post_init__``)."""
    for spec in specs(type(obj)).values():
        value = getattr(obj, spec.name)
        checked = parse(spec, value, f"{spec.name}={value!r}")
        # Normalised (a log level's case) or typed (an enum's text): keep the canonical form.
        if checked != value or (isinstance(checked, Enum) and not isinstance(value, Enum)):
            object.__setattr__(obj, spec.name, checked)


def _convert(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise ValueError("not a boolean: use true or false (or 1/0, yes/no)")
    if _is_enum(kind):
        if isinstance(raw, kind):
            return raw
        if not isinstance(raw, str):
            raise ValueError("not text: quote it")
        try:
            return kind(raw)
        except ValueError:
            raise ValueError("not one of the choices") from None
    if kind is str:
        if not isinstance(raw, str):
            raise ValueError("not text: quote it")
        if any(ord(c) < 32 for c in raw):
            raise ValueError("contains a control character (a NUL byte, a newline)")
        return raw
    if isinstance(raw, bool):
        raise ValueError("not a number")
    if kind is int:
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
            return int(raw.strip())
        raise ValueError("not a whole number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _apply(rule: Rule, value: Any) -> Any:
    if rule.ge is not None and value < rule.ge:
        raise ValueError(f"below the minimum {_num(rule.ge)}")
    if rule.gt is not None and value <= rule.gt:
        raise ValueError(f"must be above {_num(rule.gt)}")
    if rule.le is not None and value > rule.le:
        raise ValueError(f"above the maximum {_num(rule.le)}")
    if rule.choices is not None and value not in rule.choices:
        raise ValueError("not one of the choices")
    if rule.check is not None:
        value = rule.check(value)
    return value


# -- checks shared by several settings -------------------------------------------------------


def log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError("not a log level")
    return level


def host_port_list(value: str) -> str:
    """``host:port[,host:port...]``; IPv6 hosts in brackets."""
    items = [i.strip() for i in value.split(",")]
    if not value.strip() or not all(items):
        raise ValueError("an empty broker address")
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{item!r} has no port")
        if host.startswith("[") != host.endswith("]") or (":" in host and "[" not in host):
            raise ValueError(f"{item!r}: write an IPv6 address in brackets, [::1]:9092")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r}: port {port!r} is not a number from 1 to 65535")
    return value


HOST_PORTS: Final = "host:port[,host:port...], for example 127.0.0.1:9092"
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic(value: str) -> str:
    """A Kafka topic name (or a group id): letters, digits, '.', '_', '-'."""
    if not _TOPIC_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError("not a valid name (letters, digits, '.', '_' and '-', 1 to 249)")
    return value


def optional_topic(value: str) -> str:
    return value and topic(value)


def not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def iter_specs(*classes: type[Any]) -> Iterator[Spec]:
    for cls in classes:
        yield from specs(cls).values()


def optional_http_urls(value: str) -> str:
    """Empty, or ``http(s)://host[:port][/path]`` URLs separated by commas."""
    for url in (u.strip() for u in value.split(",") if value.strip()):
        scheme, sep, rest = url.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.strip("/"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return value.strip()
