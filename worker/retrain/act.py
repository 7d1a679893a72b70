"""Acting on a decision: promote through the store and the control topic, or shadow, and
publish the decision record. The only part of a retrain run that changes what serves."""

from __future__ import annotations

import logging

from worker.errors import RetrainError
from worker.kafka_io.clients import publish
from worker.kafka_io.config import Connection, Role, client_config
from worker.model.store import ModelStore, read_pointer
from worker.retrain.decision import Action, Compared, decision_record
from worker.retrain.policy import Decision, Policy
from worker.retrain.settings import RetrainSettings
from worker.stream.reload import control_record, shadow_record

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 30.0


def apply(
    s: RetrainSettings,
    store: ModelStore,
    c: Compared,
    decision: Decision,
    policy: Policy,
    action: Action,
    now_ms: int,
) -> None:
    """Do ``action``; then the decision record (none for a plain run, which only adds
    the candidate to the store)."""
    messages: list[tuple[str, bytes, bytes]] = []
    if action == "promoted":
        serving = read_pointer(store.folder(c.model))
        if serving != c.champion_version:  # someone promoted meanwhile: theirs stands
            raise RetrainError(f"{c.model} {serving} was made current during the run; "
                               f"candidate {c.candidate_version} was compared with "
                               f"{c.champion_version} and is not promoted (run again)")  # fmt: skip
        # The pointer first: workers that follow only the store see it too; the control
        # record then reaches every worker of the fleet at once.
        store.promote(c.model, c.candidate_version)
        if s.control_topic:
            messages.append((s.control_topic, *control_record(c.model, c.candidate_version)))
    elif action == "shadowed":  # run_retrain checked that there is a control topic
        messages.append((s.control_topic, *shadow_record(c.model, c.candidate_version)))
    if action != "none":
        messages.append((s.alerts_topic, *decision_record(c, decision, policy, action, now_ms)))
    if messages:
        conf = client_config(Role.PRODUCER, Connection(s.bootstrap, dict(s.kafka)))
        publish(conf, messages, PUBLISH_TIMEOUT_S)
    log.info("retrain decision", extra={"model": c.model, "candidate": c.candidate_version,
                                        "champion": c.champion_version, "action": action,
                                        "reasons": decision.reasons})  # fmt: skip
