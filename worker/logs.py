"""Structured logs: one JSON object per line on stderr, secrets redacted.

Fields: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg`` and any ``extra``
given to the call (``log.info("committed", extra={"offsets": 12})``). The
redaction filter replaces every configured secret value (SASL passwords, TLS
key passwords, OAuth secrets from the librdkafka settings) wherever it would
appear, including in librdkafka's own messages and in tracebacks. ``fmt="text"``
gives plain lines for a terminal instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from worker.settings_common import LogFormat

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: ``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={orjson.dumps(v, default=str).decode()}"
                         for k, v in vars(record).items()
                         if k not in _STANDARD and not k.startswith("_"))
        line = super().format(record)
        return f"{line} {extra}" if extra else line


class Redact(logging.Filter):
    """Replaces secret values in the final line, whatever produced it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class RedactingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, redact: Redact) -> None:
        super().__init__(sys.stderr)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact.redact(super().format(record))


def setup(level: str, secrets: Iterable[str] = (), fmt: LogFormat = LogFormat.JSON) -> None:
    """Route every logger (ours, librdkafka's through confluent-kafka, Python warnings) to
    one handler on stderr: JSON lines or text for a terminal."""
    handler = RedactingHandler(Redact(secrets))
    handler.setFormatter(JsonFormatter() if fmt == LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a log line too, not raw stderr
