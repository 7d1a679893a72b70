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
    """Root of every fatal error raised by this package."""


class ConfigError(ScoringError):
    """A setting is missing, malformed or inconsistent."""


class ModelLoadError(ScoringError):
    """A model bundle cannot be loaded or fails its checks."""


class ModelStoreError(ScoringError):
    """A model store operation is refused (unknown version, existing version, no history)."""


class SchemaLoadError(ScoringError):
    """A JSON Schema file cannot be read or is not a valid schema."""


class BatchInputError(ScoringError):
    """A batch-mode input file cannot be read or parsed as a whole."""


class KafkaFatalError(ScoringError):
    """The broker cannot be used at all (unreachable, authentication failed)."""


class KafkaLocalError(ScoringError):
    """The local development broker cannot be resolved, started or stopped."""


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
