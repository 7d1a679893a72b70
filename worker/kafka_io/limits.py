"""What the output topics accept, read at start: ``max.message.bytes``, and whether they
are compacted (a compacted topic refuses every record without a key)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from worker.kafka_io.config import Connection, Role, client_config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicRules:
    #: Largest record batch the topic accepts; None when the cluster does not say.
    max_bytes: int | None
    compacted: bool = False


def topic_rules(conn: Connection, topics: list[str],
                timeout_s: float = 10.0) -> dict[str, TopicRules]:
    """Each topic's rules; a topic that does not exist yet gets the broker's
    ``message.max.bytes`` (what auto-creation would give it, not compacted); unknown
    where the cluster does not say (no DescribeConfigs permission, say)."""
    client = AdminClient(client_config(Role.ADMIN, conn))
    out: dict[str, TopicRules] = {}
    missing: list[str] = []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in dict.fromkeys(topics)]
    for res, fut in client.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entries = fut.result(timeout_s)
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" in str(exc) or "does not exist" in str(exc):
                missing.append(res.name)
            else:
                log.warning("cannot read the configuration of topic %s: %s", res.name, exc)
                out[res.name] = TopicRules(None)
            continue
        size, policy = entries.get("max.message.bytes"), entries.get("cleanup.policy")
        out[res.name] = TopicRules(int(size.value) if size is not None and size.value else None,
                                   policy is not None and "compact" in (policy.value or ""))
    if missing:
        default = _broker_limit(client, timeout_s)
        out.update({name: TopicRules(default) for name in missing})
    return out


def _broker_limit(client: AdminClient, timeout_s: float) -> int | None:
    try:
        brokers = client.list_topics(timeout=timeout_s).brokers
        res = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
        fut = client.describe_configs([res], request_timeout=timeout_s)[res]
        entry = fut.result(timeout_s).get("message.max.bytes")
        return int(entry.value) if entry is not None and entry.value else None
    except (KafkaException, ValueError) as exc:
        log.warning("cannot read the broker's message.max.bytes: %s", exc)
        return None
