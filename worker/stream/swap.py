"""Applying hot-reload outcomes between two batches: swap the bundle, or log, count and
announce a refusal (the decisions are made in worker/stream/reload.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

from worker.clock import wall_ms
from worker.core.pipeline import ScoringContext
from worker.explain import ExplainError
from worker.model.checked import library_mismatch
from worker.stream.metrics import WorkerMetrics
from worker.stream.reload import Refusal, ReloadEvent, ShadowSwap, Swap, refusal_record

log = logging.getLogger(__name__)


def apply_events(
    ctx: ScoringContext, events: Sequence[ReloadEvent], metrics: WorkerMetrics,
    alert: Callable[[bytes, bytes], None], worker_id: str,
) -> ScoringContext:
    """The context to score the next batch with; refusals are logged, counted, alerted."""
    for ev in events:
        if isinstance(ev, ShadowSwap):
            continue  # apply_shadow's
        if isinstance(ev, Swap):
            try:
                swapped = dataclasses.replace(ctx, bundle=ev.bundle)
            except ExplainError as exc:  # --explain, and a model it cannot explain
                ev = Refusal(ev.bundle.name, ev.bundle.version, str(exc), wall_ms(), ev.source)
        if isinstance(ev, Refusal):
            metrics.model_reloads.labels("refused").inc()
            log.warning("model reload refused; still serving %s", ctx.bundle.version,
                        extra={"model": ev.model, "model_version": ev.version,
                               "reason": ev.reason, "source": ev.source})
            alert(*refusal_record(ev, worker_id))
            continue
        old, new = ctx.bundle.manifest, ev.bundle.manifest
        old_mismatch = library_mismatch(ctx.bundle)
        ctx = swapped
        metrics.model_reloads.labels("ok").inc()
        _relabel(metrics, old.name, old.version, old.sha256[:12], old_mismatch,
                 new.name, new.version, new.sha256[:12], library_mismatch(ev.bundle))
        log.info("model reloaded", extra={"model": new.name, "model_version": new.version,
                                          "previous_version": old.version,
                                          "source": ev.source})
    return ctx


def _relabel(metrics: WorkerMetrics, *labels: str) -> None:
    old, new = labels[:4], labels[4:]
    if old != new:
        with contextlib.suppress(KeyError):  # never set: a context built without run_worker
            metrics.forget(metrics.model_info, old)
    metrics.model_info.labels(*new).set(1)


def apply_shadow(
    shadow: ScoringContext | None, ctx: ScoringContext, events: Sequence[ReloadEvent]
) -> ScoringContext | None:
    """The shadow context for the next batch: the main context with the shadow bundle."""
    for ev in events:
        if isinstance(ev, ShadowSwap):
            bundle = ev.bundle
            shadow = (None if bundle is None
                      else dataclasses.replace(ctx, bundle=bundle, explain=0))
            version = None if bundle is None else bundle.version
            log.info("shadow model %s", "stopped" if bundle is None else "set",
                     extra={"model": ctx.bundle.name, "source": ev.source,
                            "model_version": version})
    return shadow
