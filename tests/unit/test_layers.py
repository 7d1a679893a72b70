"""The layers hold: the pure parts need neither Kafka nor Prometheus, only kafka_io imports
confluent_kafka, modules stay small, and no two modules import each other in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.unit.helpers import ROOT

PACKAGE = ROOT / "worker"
PURE = ("worker.core", "worker.model", "worker.monitor", "worker.retrain.dataset",
        "worker.retrain.threshold", "worker.retrain.policy", "worker.retrain.evaluate",
        "worker.retrain.table", "worker.retrain.decision")
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("confluent_kafka", "prometheus_client"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported", len(sys.argv) - 1)
"""


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def test_pure_parts_import_without_kafka_or_prometheus() -> None:
    pure = [m for m in modules() if any(m == p or m.startswith(p + ".") for p in PURE)]
    names = ["worker", "worker.api", *pure]
    result = subprocess.run([sys.executable, "-c", BLOCKER, *names], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"imported {len(names)}" in result.stdout


def top_level_imports(path: Path, package: str, typing_too: bool = True) -> set[str]:
    """Modules imported at module level (not inside functions); ``typing_too``: including
    the ``if TYPE_CHECKING:`` ones, since a cycle there is a cycle of the design too."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            continue
        if (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                and not typing_too):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module:
                found |= {f"{sub.module}.{a.name}" for a in sub.names}
                if sub.module != package:  # "from worker import x" imports worker.x only
                    found.add(sub.module)
    return {m for m in found if m.split(".")[0] == package}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {name: {m for m in top_level_imports(path, "worker") if m in mods and m != name}
             for name, path in mods.items()}
    # The root package's lazy API names every public module for type checkers only; and a
    # module's own parent packages run before it whatever it imports, so "from worker.model
    # import runtimes" inside worker.model.bundle is an edge to worker.model.runtimes only.
    graph["worker"] = set()
    for name in graph:
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".")}
    assert find_cycle(graph) is None


def test_only_kafka_io_imports_confluent_kafka() -> None:
    offenders = [name for name, path in modules().items()
                 if not name.startswith("worker.kafka_io")
                 and top_level_imports(path, "confluent_kafka", typing_too=False)]
    assert offenders == []


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
