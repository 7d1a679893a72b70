"""The sink seam: where the worker's outputs go (predictions, dead letters, shadow
predictions, model alerts), each addressed by its topic name from the settings.

The loop's delivery contract rests on it. ``send`` queues one record with a tag (an int)
and names who hears the verdict: ``on_delivery(tag, None, None)`` once the destination has
it for good, or ``on_delivery(tag, SendError, (topic, value, key))`` when it refused it
(worker/errors.py says whether a retry may help). These terms are defined once, in
worker/delivery_terms.py. Verdicts come from ``poll`` (or from ``send`` itself, for a
record refused on the spot); the loop commits an input's offset only after every output
of it was acknowledged, so a sink must never report a record delivered before its
destination has it. The loop passes one ``on_delivery`` for a batch's records and each record's
position in the batch as its tag: the tag a refusal comes with tells the loop which record
it was (never its content). A toy sink fits in four lines::

    class ListSink:
        def __init__(self): self.records = []
        def send(self, topic, value, key, headers, on_delivery, tag):
            self.records.append((topic, value, key, headers)); on_delivery(tag, None, None)
        def poll(self, timeout_s): pass

A sink may also offer ``send_all(records, on_delivery, first_tag)`` (``BatchSink``): the
same as ``send`` of each record in turn, tagged ``first_tag``, ``first_tag + 1``, ..., in one
call; the loop uses it when it is there (the Kafka sink has it: a Python call per record
was a tenth of the worker's time per event).

Exactly-once mode needs a ``TransactionalSink``: records sent between ``begin`` and a
``commit`` that returns ``TxState.COMMITTED`` become visible together with the input offsets
handed to that commit (``TxState.COMMITTED``), or not at all.

Kafka (worker/stream/sinks/kafka.py) is the built-in sink. Adding one is adding a
module with a factory and calling ``register``; ``run_worker(sink=...)`` also takes
an instance directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from worker.config import Settings
from worker.delivery_terms import Headers, OnDelivery, OutRecord, Sent, TxState

__all__ = ["BatchSink", "Headers", "OnDelivery", "OutRecord", "Sent", "Sink", "SinkFactory",
           "SinkHooks", "TransactionalSink", "TxState", "build", "register"]


class Sink(Protocol):
    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: Headers | None, on_delivery: OnDelivery, tag: int) -> None:
        """Queue one record; never blocks for long (the loop bounds what is in flight).
        ``on_delivery`` hears its verdict with ``tag``."""

    def poll(self, timeout_s: float) -> None:
        """Deliver pending verdicts, waiting at most ``timeout_s`` for the first one."""


@runtime_checkable
class BatchSink(Sink, Protocol):
    def send_all(self, records: Sequence[OutRecord], on_delivery: OnDelivery,
                 first_tag: int) -> None:
        """``send`` of each record in order, the k-th tagged ``first_tag + k``."""


@runtime_checkable
class TransactionalSink(Sink, Protocol):
    def begin(self) -> None:
        """Open a transaction; every ``send`` until the next commit or abort belongs to it."""

    def commit(self, offsets: Mapping[tuple[str, int], int], group: object,
               timeout_s: float) -> TxState:
        """Commit the transaction's records with the input ``offsets`` (next offset to
        read per partition) of consumer group generation ``group``; waits at most about
        ``timeout_s``. Returns a TxState: COMMITTED, PENDING or ABORT."""

    def abort(self, timeout_s: float) -> bool:
        """Drop the open transaction; False when that did not finish within the timeout."""


@dataclass(frozen=True)
class SinkHooks:
    """What the worker offers a sink besides the settings; a sink may ignore any of it."""

    #: Client statistics (JSON text), for /metrics and readiness.
    stats: Callable[[str], None] | None = None
    #: The broker connection watch (worker/kafka_io/watch.py) for connection errors.
    watch: Any = None
    #: The largest record the outputs accept, from the start-up check (None: unchecked).
    record_limit: int | None = None


#: A sink factory gets the settings and the hooks.
SinkFactory = Callable[[Settings, SinkHooks], Sink]
_FACTORIES: dict[str, SinkFactory] = {}


def register(name: str, factory: SinkFactory) -> None:
    _FACTORIES[name] = factory


def build(name: str, settings: Settings, hooks: SinkHooks | None = None) -> Sink:
    if "kafka" not in _FACTORIES:
        from worker.stream.sinks import kafka  # noqa: F401  (registers itself)
    try:
        factory = _FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(f"unknown sink {name!r}, expected one of {known}") from None
    return factory(settings, hooks or SinkHooks())
