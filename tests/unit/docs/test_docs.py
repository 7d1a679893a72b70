"""The docs site agrees with the code: the generated reference pages are current, every
setting has an entry, every alert has its runbook page, the quick start page includes the
README's executed block, the site builds with --strict and loads nothing from the internet,
and what the issue asks for is two clicks from the home page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.helpers import ROOT
from worker.devtools import reference_docs

DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
#: An asset the browser would fetch from elsewhere (a link to a page is fine).
EXTERNAL_ASSET = re.compile(
    r"<(?:link|script|img|source|iframe|video|audio)\b[^>]*\b(?:href|src)=[\"']?(?:https?:)?//"
    r"|url\([\"']?(?:https?:)?//|@import\s+[\"']?(?:https?:)?//", re.I)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_generated_reference_is_current() -> None:
    fresh = reference_docs.pages()
    stale = [name for name, text in fresh.items()
             if not (REFERENCE / name).is_file() or (REFERENCE / name).read_text() != text]
    assert not stale, f"docs/reference/{stale} differ from the code: run `make docs-reference`"


def settings_flags(command: str) -> list[str]:
    """The settings a subcommand's parser takes as flags (its "settings" group): what users
    can set, read off the CLI rather than the declarations the generator reads."""
    from worker.cli import build_parser
    from worker.devtools.reference_code import _subcommands

    parser = _subcommands(build_parser())[command]
    groups = [g for g in parser._action_groups if g.title == "settings"]
    return [a.dest for g in groups for a in g._group_actions]


@pytest.mark.parametrize("command", reference_docs.COMMANDS, ids=lambda c: c.name)
def test_every_setting_has_a_reference_entry(command: reference_docs.Command) -> None:
    names = settings_flags(command.name)
    page = (REFERENCE / "settings" / f"{command.name}.md").read_text()
    missing = [n for n in names if f"\n## `{n}` {{ #{n} }}\n" not in page]
    assert names and not missing, f"no entry for {missing}: run `make docs-reference`"
    for name in names:  # each entry says its default and what it accepts
        entry = page.split(f"\n## `{name}` ", 1)[1].split("\n## ", 1)[0]
        assert "- type " in entry and ", default " in entry and "- accepts: " in entry, name


def test_every_subcommand_has_its_help_in_the_reference() -> None:
    from worker.cli import build_parser
    from worker.devtools.reference_code import _subcommands

    page = (REFERENCE / "cli.md").read_text()
    for name in _subcommands(build_parser()):
        assert f"## `scoring-worker {name}`\n" in page, name


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def nav_pages() -> list[str]:
    def walk(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for v in node.values() for p in walk(v)]
        return [p for item in node for p in walk(item)]

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def test_every_alert_has_a_runbook_page_in_the_navigation() -> None:
    folder = DOCS / "operations" / "alerts"
    index = (folder / "index.md").read_text()
    pages = set()
    for name, rule in alert_rules().items():
        page = ROOT / rule["annotations"]["runbook_url"]
        assert page.parent == folder and page.read_text().startswith(f"# {name}\n"), name
        assert f"[{name}]({page.name})" in index, f"{name}: not in the alerts' table"
        assert str(page.relative_to(DOCS)) in nav_pages(), f"{name}: not in mkdocs.yml"
        for part in ("## What it means", "## Check", "## Do"):
            assert part in page.read_text(), (name, part)
        pages.add(page.name)
    assert {p.name for p in folder.glob("*.md")} - pages == {"index.md"}


def test_the_quick_start_page_includes_the_readmes_executed_block() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- --8<-- [start:quickstart] -->\n", 1)[1]
    section = section.split("<!-- --8<-- [end:quickstart] -->", 1)[0]
    assert "<!-- quickstart -->\n```sh\n" in section  # what test_quickstart.py runs
    assert '--8<-- "README.md:quickstart"' in (DOCS / "getting-started" / "index.md").read_text()


def links(page: str) -> set[str]:
    text = (DOCS / page).read_text()
    base = Path(page).parent
    return {str((base / m).as_posix()).replace("./", "") for m in LINK.findall(text)
            if not m.startswith(("http:", "https:"))}


def test_what_a_reader_comes_for_is_two_clicks_from_home() -> None:
    home = links("index.md")
    # One click: the page; two: a page listed on it.
    assert "bundling/index.md" in home  # how to bundle a pipeline
    assert "operations/kubernetes.md" in home  # how to run on Kubernetes
    assert {"reference/settings/run.md", "reference/settings/monitor.md",
            "reference/settings/retrain.md"} <= home  # every setting, range and default
    assert "operations/alerts/index.md" in home  # each alert's page is one click further
    alerts = links("operations/alerts/index.md")
    for rule in alert_rules().values():
        assert f"operations/alerts/{Path(rule['annotations']['runbook_url']).name}" in alerts


def test_the_site_builds_strict_and_loads_nothing_from_the_internet(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    pages = list(site.rglob("*.html"))
    assert len(pages) >= len(nav_pages())
    for path in [*pages, *site.rglob("*.css")]:
        found = EXTERNAL_ASSET.search(path.read_text(errors="replace"))
        assert found is None, f"{path.relative_to(site)} loads {found.group(0) if found else ''}"
    assert "kafka-local start" in (site / "getting-started" / "index.html").read_text()


def test_the_readmes_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = {m for m in LINK.findall(readme) if not m.startswith(("http:", "https:"))}
    assert targets, "the README links into the docs"
    missing = sorted(t for t in targets if not (ROOT / t).exists())
    assert not missing, f"README.md links to {missing}"
    assert len(readme.splitlines()) <= 220, "the README stays short: move detail into docs/"
