"""How large a record the output topics accept (``max.message.bytes``), read at start."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from worker.kafka_io.config import Connection, Role, client_config

log = logging.getLogger(__name__)


def topic_record_limits(conn: Connection, topics: list[str],
                        timeout_s: float = 10.0) -> dict[str, int | None]:  # fmt: skip
    """Each topic's ``max.message.bytes``; a topic that does not exist yet gets the
    broker's ``message.max.bytes`` (what auto-creation would give it); None where the
    cluster does not say (no DescribeConfigs permission, say)."""
    client = AdminClient(client_config(Role.ADMIN, conn))
    out: dict[str, int | None] = {}
    missing: list[str] = []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in dict.fromkeys(topics)]
    for res, fut in client.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entry = fut.result(timeout_s).get("max.message.bytes")
            out[res.name] = int(entry.value) if entry is not None and entry.value else None
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" in str(exc) or "does not exist" in str(exc):
                missing.append(res.name)
            else:
                log.warning("cannot read max.message.bytes of topic %s: %s", res.name, exc)
                out[res.name] = None
    if missing:
        default = _broker_limit(client, timeout_s)
        out.update({name: default for name in missing})
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
