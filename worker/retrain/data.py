"""Reading a retrain run's data: the events of the range and their labels, through the
worker's own decode, validation and feature code, joined and split by time.

The Kafka reads are here (through worker/kafka_io/); what is done with the records
(prepare, join, split) is pure and lives in core/pipeline.py and dataset.py.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from worker.core import decoders
from worker.core.decoders import Decoder
from worker.core.decoders.wire import WireDecoder
from worker.core.features import for_estimator
from worker.core.pipeline import ScoringContext, prepare
from worker.errors import ConfigError, Rejection, RetrainError
from worker.kafka_io.config import Connection, Role, client_config
from worker.kafka_io.ranges import RangeRecord, read_range
from worker.model.manifest import ClassLabel
from worker.monitor.views import LabelValue, LabelView, MonitorInputError
from worker.retrain.dataset import Joined, LabelTable, Split, join, label_table, time_split
from worker.retrain.settings import RetrainSettings, TimeRange
from worker.stream.schema_gate import look_up_waiting
from worker.wire_settings import require_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """The joined, split rows: ``train``/``holdout`` are positions into ``joined``."""

    events: list[RangeRecord]
    matrix: Any  # the valid events' model input, as the worker builds it
    joined: Joined
    split: Split
    labels: LabelTable
    labels_end_ms: int
    rejected: dict[str, int] = field(default_factory=dict)
    bad_label_records: int = 0
    #: Input index (into ``events``) of each valid row of ``matrix``.
    inputs: list[int] = field(default_factory=list)

    def values(self, part: Sequence[int]) -> list[bytes | None]:
        return [self.events[self.inputs[self.joined.rows[k]]].value for k in part]

    def truth(self, part: Sequence[int]) -> list[ClassLabel]:
        return [self.joined.y[k] for k in part]

    def times(self, part: Sequence[int]) -> list[int]:
        return [self.joined.times[k] for k in part]

    def model_input(self, part: Sequence[int]) -> Any:
        rows = [self.joined.rows[k] for k in part]
        m = self.matrix
        return m.iloc[rows] if hasattr(m, "iloc") else m[np.asarray(rows, dtype=np.intp)]

    def counts(self) -> dict[str, Any]:
        j = self.joined
        valid = len(self.inputs) - j.duplicates
        return {"events": len(self.events), "rejected": dict(sorted(self.rejected.items())),
                "duplicates": j.duplicates, "valid": valid, "unlabeled": j.unlabeled,
                "bad_labels": j.bad_labels + self.bad_label_records, "labeled": j.labeled,
                "labels_read": self.labels.read, "duplicate_labels": self.labels.duplicates,
                "train": len(self.split.train), "holdout": len(self.split.holdout),
                "label_coverage": j.labeled / valid if valid else None}


def read_data(
    s: RetrainSettings, ctx: ScoringContext, window: TimeRange, now_ms: int
) -> TrainingData:
    """Everything the run trains and evaluates on; RetrainError for data it cannot use."""
    conf = client_config(Role.RANGE, Connection(s.bootstrap, dict(s.kafka)))
    events = read_range(conf, s.input_topic, window.start_ms, window.end_ms,
                        s.read_timeout_s, s.max_events)
    if not events:
        raise RetrainError(f"no events in {s.input_topic} in {window.describe()} "
                           "(check --input-topic and the range)")
    labels_end = max(window.end_ms, min(now_ms, window.end_ms + int(s.label_horizon_s * 1000)))
    label_records = read_range(conf, s.labels_topic, window.start_ms, labels_end,
                               s.read_timeout_s, s.max_events)
    pairs, bad = _label_pairs(label_records)
    labels = label_table(pairs)
    values = [r.value for r in events]
    look_up_schemas(s, ctx.decoder, values)
    prepared = prepare(values, ctx)
    rejected = Counter(o.kind.value for o in prepared.outcomes if isinstance(o, Rejection))
    inputs = [prepared.positions[j] for j in prepared.batch.valid]
    ids = [str(prepared.events[j]["id"]) for j in prepared.batch.valid]
    joined = join(ids, [events[i].timestamp_ms for i in inputs], labels, ctx.bundle.classes)
    # The estimator's own input (a frame, where the runtime scores typed columns): the
    # refit and its candidate take what the champion's estimator took.
    data = TrainingData(events, for_estimator(prepared.batch, ctx.bundle.runtime), joined,
                        time_split(joined.times, s.holdout_fraction), labels, labels_end,
                        dict(rejected), bad, inputs)
    log.info("retrain data read", extra={"counts": data.counts()})
    check_usable(data, ctx.bundle.classes, s)
    return data


def events_decoder(s: RetrainSettings) -> Decoder:
    """The decoder of ``--input-format`` (the workers' own)."""
    try:
        return decoders.get(str(s.input_format))
    except ValueError as exc:
        raise ConfigError(f"--input-format {s.input_format}: {exc}") from None


def look_up_schemas(s: RetrainSettings, decoder: Decoder, values: list[bytes | None]) -> None:
    """The schemas a wire format's events name, fetched before they are decoded; a registry
    that does not answer is asked again for up to ``read_timeout_s``, then the run stops."""
    if not isinstance(decoder, WireDecoder):
        return
    require_registry("--input-format", s.input_format, s.schema_registry)
    from worker.kafka_io.registry import RegistryUnavailable, SchemaSource, connection_of

    look_up_waiting(decoder.book, SchemaSource(connection_of(s)), values, RegistryUnavailable,
                    lambda waited: waited < s.read_timeout_s, s.schema_registry_backoff_max_s)


def _label_pairs(records: list[RangeRecord]) -> tuple[list[tuple[str, LabelValue]], int]:
    pairs: list[tuple[str, LabelValue]] = []
    bad = 0
    for r in records:
        try:
            view = LabelView.from_message(orjson.loads(r.value or b""), r.timestamp_ms)
        except (orjson.JSONDecodeError, MonitorInputError, AttributeError):
            bad += 1  # the monitor counts these as invalid too
            continue
        pairs.append((view.id, view.value))
    return pairs, bad


def check_usable(data: TrainingData, classes: Sequence[ClassLabel], s: RetrainSettings) -> None:
    """Bad input ends the run with one line: nothing labeled, one class only."""
    j, c = data.joined, data.counts()
    if not j.labeled:
        raise RetrainError(
            f"no labeled rows: none of the {c['valid']} valid events has a label among the "
            f"{c['labels_read']} read from {s.labels_topic} (wait for labels, or check "
            f"--labels-topic; {sum(data.rejected.values())} events failed validation)")
    present = set(j.y)
    if len(present) < 2:
        raise RetrainError(f"one class only: all {j.labeled} labeled rows are "
                           f"{next(iter(present))!r} (widen the range)")
    for part, rows in (("training", data.split.train), ("holdout", data.split.holdout)):
        seen = {j.y[k] for k in rows}
        if len(seen) < len(classes):
            raise RetrainError(
                f"one class only in the {part} part ({len(rows)} rows, all "
                f"{sorted(map(str, seen))}): widen the range or change holdout_fraction")
