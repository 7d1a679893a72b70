"""The Python API example of the docs (docs/reference/python-api.md) runs as written and
prints what the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.unit.helpers import ROOT


def test_the_python_api_example_runs(tmp_path: Path) -> None:
    section = (ROOT / "docs" / "reference" / "python-api.md").read_text()
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python block on the Python API page"
    assert len(code.group(1).strip().splitlines()) <= 20
    result = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    promised = re.search(r"It prints `([^`]*)`.*?and\s+`([^`]*)`", section, re.S)
    assert promised is not None
    assert lines == [promised.group(1), promised.group(2)]
    assert (tmp_path / "build" / "my-model" / "model.json").exists()
