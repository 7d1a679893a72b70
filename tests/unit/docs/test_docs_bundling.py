"""Every example of the docs' "Bundling your own model" page (docs/bundling/index.md) runs: its
Python blocks in order, in one namespace, in a fresh folder; its ``scoring-worker`` lines
through the CLI."""

from __future__ import annotations

import os
import re
import shlex
import warnings
from pathlib import Path

import orjson
import pytest

from tests.unit.helpers import ROOT
from worker.cli import main

PAGE = ROOT / "docs" / "bundling" / "index.md"
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(PAGE.read_text())


def test_the_bundling_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    examples = blocks()
    assert [kind for kind, _ in examples].count("python") == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, code in examples:
            if kind == "python":
                exec(compile(code, str(PAGE), "exec"), namespace)  # the page's own code
                continue
            for line in code.strip().splitlines():
                argv = shlex.split(line)
                assert argv[0] == "scoring-worker"
                assert main(argv[1:]) == 0, line
    scores = [orjson.loads(x) for x in (tmp_path / "scores.jsonl").read_bytes().splitlines()]
    onnx = [orjson.loads(x) for x in (tmp_path / "scores-onnx.jsonl").read_bytes().splitlines()]
    assert [s["id"] for s in scores] == ["p-1", "p-2"]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(scores, onnx, strict=True)) <= 1e-5
    assert os.path.isfile(tmp_path / "models" / "payments-onnx-1" / "model.skops")
