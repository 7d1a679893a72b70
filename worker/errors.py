"""Errors of scoring-worker.

Only fatal conditions are exceptions: every one derives from ``ScoringError``
so that ``cli.py`` (the only place that exits) can turn it into one clear line
and a non-zero status. A record that cannot be scored is *not* an exception:
it becomes a ``Rejection`` value that travels to the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ScoringError(Exception):
    """Root of every fatal error raised by this package.

    ``exit_status`` is what the command exits with: 2 for a mistake the user can fix in
    the command, its settings or its files; 1 for a failure of the environment at run
    time (broker unreachable or lost, authentication, TLS), where a retry may succeed.
    """

    exit_status: int = 2
    #: Where to look next, added to the message when it carries no hint of its own.
    hint: str = "see the command's --help"


class ConfigError(ScoringError):
    """A setting is missing, malformed or inconsistent."""

    hint = "see the command's --help for the settings"


class ModelLoadError(ScoringError):
    """A model bundle cannot be loaded or fails its checks."""

    hint = "check the bundle given with --model; `scoring-worker train-demo` writes a valid one"


class ModelStoreError(ScoringError):
    """A model store operation is refused (unknown version, existing version, no history)."""

    hint = "`scoring-worker models list --store STORE` shows what the store holds"


class SchemaLoadError(ScoringError):
    """A JSON Schema file cannot be read or is not a valid schema."""

    hint = "check --schema: a JSON Schema (2020-12) file"


class BatchInputError(ScoringError):
    """A batch-mode input file cannot be read or parsed as a whole."""

    hint = "check the input file of score-file"


class KafkaFatalError(ScoringError):
    """The broker cannot be used at all (unreachable, authentication failed)."""

    exit_status = 1
    hint = "check --bootstrap and the [kafka] properties"


class RetrainError(ScoringError):
    """A retrain run cannot go on (no labeled rows, one class only, an empty range, ...)."""

    hint = "see scoring-worker retrain --help"


class KafkaLocalError(ScoringError):
    """The local development broker cannot be resolved, started or stopped."""

    hint = "see scoring-worker kafka-local --help"


def describe(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most ``limit`` characters, for a refusal or a dead
    letter: what a library raised can be long and span lines."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RejectKind(StrEnum):
    """Why a record could not be scored; the value is the dead-letter header."""

    DECODE = "decode"
    SCHEMA = "schema"
    FEATURES = "features"
    MODEL = "model"
    #: The record's output (prediction or dead letter) is larger than the outputs accept.
    TOO_LARGE = "too_large"
    #: The broker refused the record's output for good for another reason (INVALID_RECORD...).
    UNDELIVERABLE = "undeliverable"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be scored, with a human-readable reason."""

    kind: RejectKind
    message: str


class SendFailure(StrEnum):
    """How an output the broker did not take should be handled."""

    #: Larger than the producer or the topic accepts: never retried, dead-lettered as too_large.
    TOO_LARGE = "too_large"
    #: Refused for good for another reason: never retried, dead-lettered as undeliverable.
    REJECTED = "rejected"
    #: Might succeed later (timeouts, leader changes, an outage): sent again.
    TRANSIENT = "transient"


@dataclass(frozen=True, slots=True)
class SendError:
    """A delivery report's verdict on one output that did not reach its topic."""

    failure: SendFailure
    reason: str

    @property
    def permanent(self) -> bool:
        return self.failure is not SendFailure.TRANSIENT
