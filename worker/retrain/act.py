"""Acting on a decision: promote (the registry's pointer or alias, and the control topic),
or shadow, and publish the decision record. The only part of a retrain run that changes
what serves."""

from __future__ import annotations

import logging

from worker.kafka_io.config import Connection, Role, client_config
from worker.kafka_io.control import publish
from worker.model_control import ControlTopic
from worker.retrain.decision import Action, Compared, decision_record
from worker.retrain.policy import Decision, Policy
from worker.retrain.registry import Registry
from worker.retrain.settings import RetrainSettings
from worker.tracing_extra import record_tracer

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 30.0


def apply(
    s: RetrainSettings,
    registry: Registry,
    c: Compared,
    decision: Decision,
    policy: Policy,
    action: Action,
    now_ms: int,
) -> int | None:
    """Do ``action``; then the decision record (none for a plain run, which only adds
    the candidate to the store). The instruction's sequence when one was issued."""
    conn = Connection(s.bootstrap, dict(s.kafka))
    target = ControlTopic(s.control_topic, conn, PUBLISH_TIMEOUT_S) if s.control_topic else None
    sequence: int | None = None
    if action == "promoted":
        sequence = registry.promote(c, target)
    elif action == "shadowed" and target is not None:  # run_retrain checked there is one
        sequence = registry.shadow(c, target)
    if action != "none":
        key, value = decision_record(c, decision, policy, action, now_ms, sequence)
        tracer = record_tracer(s.tracing)
        headers = None if tracer is None else tracer("retrain decision", {
            "scoring.model.name": c.model, "scoring.model.version": c.candidate_version,
            "scoring.champion.version": c.champion_version, "scoring.action": action})
        publish(client_config(Role.PRODUCER, conn), [(s.alerts_topic, key, value)],
                PUBLISH_TIMEOUT_S, headers=headers)
    log.info("retrain decision", extra={"model": c.model, "candidate": c.candidate_version,
                                        "champion": c.champion_version, "action": action,
                                        "sequence": sequence,
                                        "reasons": decision.reasons})
    return sequence
