"""The README's Python API example runs as written and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.unit.helpers import ROOT


def test_readme_python_api_example(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python block in the Python API section"
    assert len(code.group(1).strip().splitlines()) <= 20
    result = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    promised = re.search(r"It prints `([^`]*)`.*?and\s+`([^`]*)`", section, re.S)
    assert promised is not None
    assert lines == [promised.group(1), promised.group(2)]
    assert (tmp_path / "build" / "my-model" / "model.json").exists()
