"""Structured JSON log lines, and secrets that never reach them."""

from __future__ import annotations

import logging

import orjson
import pytest

from worker import logs


def test_json_lines_with_extra_fields_and_redaction(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO", secrets=["hunter2-secret", "x"])  # too-short secrets are ignored
    log = logging.getLogger("worker.test")
    log.info("commit failed for sasl.password=hunter2-secret", extra={"partition": 3})
    log.debug("not shown at INFO")
    try:
        raise ValueError("token hunter2-secret leaked into an exception")
    except ValueError:
        log.exception("boom")
    lines = [orjson.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["level"] == "INFO" and first["logger"] == "worker.test"
    assert first["partition"] == 3
    assert first["msg"] == "commit failed for sasl.password=***"
    assert "hunter2-secret" not in second["exc"] and "***" in second["exc"]
    assert first["ts"].endswith("+00:00")
