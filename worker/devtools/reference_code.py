"""Reference pages read off the code: the CLI's help, the JSON schemas, the Python API
(used by reference_docs.py, which writes them)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

#: The help is wrapped at this width whatever the terminal, so the page is reproducible.
HELP_COLUMNS: Final = 100


# -- the CLI's help -------------------------------------------------------------------------


@contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps at $COLUMNS (shutil.get_terminal_size): fix it while formatting."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser, depth: int = 2) -> Iterator[tuple[int, str, str]]:
    """(heading depth, command line, its help) for the parser and every subcommand below."""
    yield depth, parser.prog, parser.format_help()
    for sub in _subcommands(parser).values():
        yield from _helps(sub, depth + 1)


def cli_page() -> str:
    from worker.cli import build_parser

    out = ["# Command line\n\n",
           "Every subcommand's `--help`, as `scoring-worker COMMAND --help` prints it. "
           "Settings flags are also TOML keys and `SCORING_*` variables: see the settings "
           "pages of [run](settings/run.md), [monitor](settings/monitor.md) and "
           "[retrain](settings/retrain.md).\n"]
    with _columns(HELP_COLUMNS):
        for depth, prog, text in _helps(build_parser()):
            out.append(f"\n{'#' * depth} `{prog}`\n\n```text\n{text.rstrip()}\n```\n")
    return "".join(out)


# -- the JSON schemas -------------------------------------------------------------------------


def _type_of(prop: dict[str, Any]) -> str:
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    kind = prop.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind:
        items = prop.get("items", {})
        return f"array of {_type_of(items)}" if kind == "array" and items else str(kind)
    for key in ("oneOf", "anyOf"):
        if key in prop:
            return " or ".join(_type_of(p) for p in prop[key])
    if "$ref" in prop:
        return f"see `{prop['$ref']}`"
    return "any"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def schema_section(path: Path) -> str:
    schema = json.loads(path.read_text())
    required = set(schema.get("required", []))
    out = [f"## {schema.get('title', path.stem)}: `{path.name}`\n\n",
           f"{_cell(schema.get('description', ''))}\n\n"]
    props = schema.get("properties", {})
    if props:
        out.append("| field | type | required | description |\n|---|---|---|---|\n")
        for name, prop in props.items():
            out.append(f"| `{name}` | {_cell(_type_of(prop))} | "
                       f"{'yes' if name in required else ''} | "
                       f"{_cell(prop.get('description', ''))} |\n")
        out.append("\n")
    out.append(f"The whole schema:\n\n```json\n{path.read_text().rstrip()}\n```\n\n")
    return "".join(out)


def schemas_page(folder: Path) -> str:
    files = sorted(folder.glob("*.schema.json"))
    out = ["# Message schemas\n\n",
           "JSON Schema (2020-12) of every message the product reads or writes, from "
           "`schemas/`. The worker validates events against the schema given with "
           "`--schema`; the tests validate every record the product writes.\n\n"]
    out.extend(f"- [{f.name}](#{_anchor(f)})\n" for f in files)
    out.append("\n")
    out.extend(schema_section(f) for f in files)
    return "".join(out).rstrip() + "\n"


def _anchor(path: Path) -> str:
    title = json.loads(path.read_text()).get("title", path.stem)
    text = f"{title}: {path.name}".lower()
    return "".join(c if c.isalnum() or c in "-_" else "-" if c == " " else "" for c in text)


# -- the Python API ---------------------------------------------------------------------------


class _Annotation(str):
    """A postponed annotation shown as written (``inspect`` would quote it)."""

    def __repr__(self) -> str:
        return str(self)


def _shown(param: inspect.Parameter) -> inspect.Parameter:
    """A parameter with its postponed annotation as written, and a default object that
    has no readable repr (``<... at 0x...>``) as ``Type()``, so the page is reproducible."""
    if isinstance(param.annotation, str):
        param = param.replace(annotation=_Annotation(param.annotation))
    default = param.default
    if default is not param.empty and " at 0x" in repr(default):
        param = param.replace(default=_Annotation(f"{type(default).__name__}()"))
    return param


def signature(obj: Any) -> str:
    sig = inspect.signature(obj)
    params = [_shown(p) for p in sig.parameters.values()]
    ret = sig.return_annotation
    sig = sig.replace(parameters=params,
                      return_annotation=_Annotation(ret) if isinstance(ret, str) else ret)
    return str(sig)


def _doc(obj: Any) -> str:
    return (inspect.getdoc(obj) or "(no docstring)").replace("``", "`")


def _members(cls: type[Any]) -> Iterator[tuple[str, Any]]:
    for name, value in vars(cls).items():
        if not name.startswith("_") and inspect.isfunction(value):
            yield name, value


def api_entry(name: str, obj: Any) -> str:
    if not inspect.isclass(obj):
        return f"## `{name}`\n\n```python\n{name}{signature(obj)}\n```\n\n{_doc(obj)}\n\n"
    out = [f"## `{name}`\n\n```python\nclass {name}\n```\n\n{_doc(obj)}\n\n"]
    if name == "Settings":
        out.append("Its fields are the settings of `run`: [settings of run](settings/run.md).\n\n")
        return "".join(out)
    if dataclasses.is_dataclass(obj):
        out.extend(f"- field `{f.name}: {f.type}`\n" for f in dataclasses.fields(obj))
    for member, func in _members(obj):
        out.append(f"- `{member}{signature(func)}`: {' '.join(_doc(func).split())}\n")
    return "".join(out) + "\n"


def api_page() -> str:
    import worker

    out = ["# Python API (generated)\n\n",
           "The stable API, `import worker`: every name of `worker.__all__`, with its "
           "signature and documentation. Everything else may change. A worked example is on "
           "[Python API](python-api.md).\n\n"]
    out.extend(api_entry(name, getattr(worker, name)) for name in sorted(worker.__all__))
    return "".join(out).rstrip() + "\n"


# -- the Prometheus alert rules -----------------------------------------------------------------


def alert_rules_page(path: Path) -> str:
    """Each rule of deploy/alerts.yml as Prometheus evaluates it, beside its runbook page."""
    import yaml  # a dev dependency, as this generator is a dev tool

    groups = yaml.safe_load(path.read_text())["groups"]
    out = ["# Prometheus alert rules\n\n",
           "Every rule of `deploy/alerts.yml` (the only copy: docker compose and the tests load "
           "it as it is). What each alert means and what to do: its runbook page, "
           "[Alerts and runbooks](../operations/alerts/index.md).\n"]
    for group in groups:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            notes = rule.get("annotations", {})
            page = str(notes.get("runbook_url", "")).removeprefix("docs/")
            anchor = page.rsplit("/", 1)[-1].removesuffix(".md") or rule["alert"].lower()
            out.append(f"\n## {rule['alert']} {{ #{anchor} }}\n\n"
                       f"Severity {rule.get('labels', {}).get('severity', '')}, pending for "
                       f"{rule.get('for', '0s')}. [Runbook](../{page}).\n\n"
                       f"```text\n{rule['expr'].strip()}\n```\n\n"
                       f"Summary: `{notes.get('summary', '')}`\n\n"
                       f"{notes.get('runbook', '')}\n")
    return "".join(out)
