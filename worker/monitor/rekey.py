"""Predictions and labels, read once and re-keyed by id into one block per join partition.

Each message is decoded and checked here, once (predictions with the worker's own
record type, ``worker.core.records``); what the join needs goes into the block of
the partition its id hashes to, so that an id's predictions and labels meet in one
partition whatever topic partitions they came from. A message that cannot be read
becomes an "x" row: the partition that gets it counts it with its other counters.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from worker.core.records import RecordError, read_prediction, read_segments, read_top_reason
from worker.monitor.codec import Block
from worker.monitor.views import LabelValue, LabelView, MonitorInputError

Source = tuple[bool, bytes | dict[str, Any] | None, int, int]
"""(is a prediction, message value, Kafka timestamp ms, source partition). A value is the
message's JSON bytes, or the record a registry format's decoder read from it."""


def partition_of(ident: str, partitions: int) -> int:
    """The join partition of an id: stable across processes, versions and restarts."""
    return zlib.crc32(ident.encode()) % partitions


def rekey(items: Iterable[Source], partitions: int, true_label_field: str) -> dict[int, Block]:
    blocks: dict[int, Block] = {}
    for is_prediction, value, ts, source in items:
        try:
            msg = value if isinstance(value, dict) else orjson.loads(value or b"")
            if type(msg) is not dict:
                raise MonitorInputError("not a JSON object")
            if is_prediction:
                ident, score, label, model, version, scored_at, event_ts, truth = \
                    read_prediction(msg, true_label_field)
                block = _block(blocks, partition_of(ident, partitions))
                event_time = scored_at if event_ts is None else event_ts
                block.add_prediction(ident, ts, model, version, score, label, event_time, truth,
                                     read_segments(msg), read_top_reason(msg))
            else:
                ident, value_, label_ts = _label(msg, ts)
                _block(blocks, partition_of(ident, partitions)).add_label(
                    ident, ts, value_, label_ts)
        except (orjson.JSONDecodeError, RecordError, MonitorInputError):
            _block(blocks, source % partitions).add_invalid(ts)
    return blocks


def _label(msg: dict[str, Any], ts: int) -> tuple[str, LabelValue, int | None]:
    ident, value, label_ts = msg.get("id"), msg.get("label"), msg.get("ts")
    if type(ident) is str and ident and (type(value) is int or type(value) is str) and (
        label_ts is None or type(label_ts) is int
    ):
        return ident, value, label_ts
    view = LabelView.from_message(msg, ts)  # the general checks, which word the error
    return view.id, view.value, view.ts


def _block(blocks: dict[int, Block], p: int) -> Block:
    block = blocks.get(p)
    if block is None:
        block = blocks[p] = Block()
    return block
