"""Start-up checks: librdkafka properties before any connection, then the broker itself.

``check_config`` builds a client once, without bootstrap servers (so it connects to
nothing): librdkafka then refuses an unknown property, a bad value or an unreadable
certificate, and the user gets one line naming the property. ``wait_for_broker``
waits until any broker of the list answers a metadata request, and ends at once,
with one line, on what no waiting fixes: failed authentication, an untrusted
certificate, a refused authorization, a stop request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from worker.errors import ConfigError, KafkaFatalError
from worker.kafka_io.admin import port_open
from worker.kafka_io.config import Connection, Role, client_config
from worker.shutdown import StopRequested

log = logging.getLogger(__name__)
_PROPERTY_RE = re.compile(
    r'property:? "?([A-Za-z0-9._-]+)"?|^(?:Failed to create \w+: )?([a-z0-9._]+) failed:')
_AUTH_CODES = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
_DENIED_CODES = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED,
                           KafkaError.GROUP_AUTHORIZATION_FAILED,
                           KafkaError.CLUSTER_AUTHORIZATION_FAILED})


def check_config(conf: Mapping[str, Any], secrets: Iterable[str] = ()) -> None:
    """Build the client ``conf`` describes once, connecting nowhere; ConfigError naming the
    property librdkafka refuses (secret values never appear in the message)."""
    probe = {k: v for k, v in conf.items()
             if k not in ("bootstrap.servers", "metadata.broker.list", "error_cb", "stats_cb",
                          "on_delivery", "logger")}
    probe["log_level"] = 0  # the probe's own notices ("no bootstrap.servers") are noise
    try:
        client: Any = Consumer(probe) if "group.id" in probe else Producer(probe)
    except KafkaException as exc:
        raise ConfigError(_property_message(exc.args[0].str(), secrets)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(_property_message(str(exc), secrets)) from None
    if isinstance(client, Consumer):
        client.close()


def _property_message(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    m = _PROPERTY_RE.search(text)
    name = (m.group(1) or m.group(2)) if m else None
    what = f"librdkafka property {name}" if name else "librdkafka properties"
    return (f"{what}: {text} (see the [kafka] table, SCORING_KAFKA or --kafka; the names are "
            "in librdkafka's CONFIGURATION.md)")


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def describe_fatal(err: KafkaError) -> str | None:
    """One line for a client error that waiting cannot fix, or None when it is transient."""
    text = err.str()
    if err.code() in _AUTH_CODES or "SASL authentication" in text:
        return (f"authentication failed: {text} (check sasl.username, sasl.password and "
                "sasl.mechanism)")
    if err.code() == KafkaError._SSL or "SSL handshake failed" in text:
        return (f"TLS handshake failed: {text} (is the broker's certificate signed by the CA "
                "in ssl.ca.location, and does it name the host you connect to?)")
    if err.code() in _DENIED_CODES:
        return f"not authorized: {text} (ask for ACLs on the topics and the group)"
    if err.fatal():
        return f"fatal client error: {text}"
    return None


def wait_for_broker(
    bootstrap: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    extra: Mapping[str, str] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> float:
    """Block until a metadata request succeeds through any broker of ``bootstrap``; return
    the seconds it took.

    ``alive`` lets a launcher give up at once when the process it waits for died; ``stop``
    (a signal's flag) ends the wait with StopRequested, polled at least every 0.3 s.
    """
    t0 = time.monotonic()
    addresses = _addresses(bootstrap)

    def check() -> float:
        if stop():
            raise StopRequested("stop requested while waiting for the broker")
        if not alive():
            raise KafkaFatalError(f"broker process for {bootstrap} exited during startup")
        return timeout - (time.monotonic() - t0)

    # Wait for a socket first: every refused connection would be a librdkafka log line.
    while not any(port_open(h, p, 0.3) for h, p in addresses):
        if check() <= 0:
            raise KafkaFatalError(f"cannot reach the Kafka broker at {bootstrap} within "
                                  f"{timeout:g}s: nothing accepts connections there (check "
                                  "--bootstrap; raise --start-timeout-s for a slow start)")
        time.sleep(0.2)
    errors: list[KafkaError] = []
    conf = client_config(Role.ADMIN, Connection(bootstrap, dict(extra or {})),
                         fixed={"error_cb": errors.append})
    client = AdminClient(conf)
    last = "no answer yet"
    while (left := check()) > 0:
        try:
            # Short requests: an authentication or TLS failure is seen within a quarter second.
            if client.list_topics(timeout=max(0.05, min(0.25, left))).brokers:
                return time.monotonic() - t0
        except KafkaException as exc:
            last = exc.args[0].str()
        client.poll(0)  # serves the error callback and librdkafka's log lines
        for err in errors:
            if (fatal := describe_fatal(err)) is not None:
                raise KafkaFatalError(fatal)
        if errors:
            last = errors[-1].str()
        errors.clear()
    raise KafkaFatalError(f"no answer from the Kafka broker at {bootstrap} within "
                          f"{timeout:g}s: {last} (check --bootstrap and the [kafka] "
                          "properties; raise --start-timeout-s for a slow start)")


def versions() -> dict[str, str]:
    """The Kafka client's versions, for ``--version``."""
    import confluent_kafka

    version = confluent_kafka.version()  # a str in some releases, (str, int) in others
    return {"confluent-kafka": version if isinstance(version, str) else version[0],
            "librdkafka": confluent_kafka.libversion()[0]}
