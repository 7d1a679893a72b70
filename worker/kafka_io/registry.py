"""The schema registry's client: a schema by its id, through ``confluent_kafka.schema_registry``.

Two answers only: the schema, or None when the registry says it has no such id (the
events naming it are dead letters). Anything else (no connection, a timeout, a 5xx, a
refused credential) is ``RegistryUnavailable``: an outage, never a bad record. The
client makes one attempt per call; the caller (worker/stream/schema_gate.py) owns the
retries and their backoff. Imported only by workers that read a wire format: it needs
``scoring-worker[registry]``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from worker.core.decoders.wire import SchemaType, WriterSchema
from worker.errors import ConfigError, ScoringError
from worker.wire_settings import RegistrySettings


class RegistryUnavailable(ScoringError):
    """The registry did not give an answer (it may later)."""


class SchemaRefused(ConfigError):
    """The registry refused to register a schema (an incompatible version, a bad schema)."""


@dataclass(frozen=True)
class RegistryConnection:
    url: str
    user: str = ""
    password: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    timeout_s: float = 5.0

    def client_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s, "max.retries": 0}
        if self.user:
            conf["basic.auth.user.info"] = f"{self.user}:{self.password}"
        for key, value in (("ssl.ca.location", self.ca), ("ssl.certificate.location", self.cert),
                           ("ssl.key.location", self.key)):
            if value:
                conf[key] = value
        return conf


def connection_of(s: RegistrySettings) -> RegistryConnection:
    """The registry settings of any command as a connection."""
    return RegistryConnection(s.schema_registry, s.schema_registry_user,
                              s.schema_registry_password, s.schema_registry_ca,
                              s.schema_registry_cert, s.schema_registry_key,
                              s.schema_registry_timeout_s)


#: Registry error codes that mean "no such schema": the id, its subject or its version.
_NOT_FOUND = frozenset({40401, 40402, 40403})


class SchemaSource:
    """Fetches writer schemas by id (each id asked once: the caller keeps what it learns)."""

    def __init__(self, conn: RegistryConnection) -> None:
        self._client = SchemaRegistryClient(conn.client_config())
        self.url = conn.url

    def fetch(self, schema_id: int) -> WriterSchema | None:
        schema = self._get(schema_id, None)
        if schema is None:
            return None
        kind = SchemaType(schema.schema_type or "AVRO")
        text = schema.schema_str or ""
        if kind is SchemaType.PROTOBUF and not _is_base64(text):
            # Confluent's registry answers .proto text unless asked for the descriptor.
            schema = self._get(schema_id, "serialized") or schema
            text = schema.schema_str or ""
        # References: Avro's named types from other subjects. (Protobuf imports of other
        # subjects are not resolved: such a schema does not parse, its events are dead
        # letters saying so.)
        refs = self._referenced(schema) if kind is SchemaType.AVRO else ()
        return WriterSchema(schema_id, kind, text, refs)

    def _referenced(self, schema: Schema, seen: set[tuple[str, int]] | None = None,
                    ) -> tuple[str, ...]:
        """The texts ``schema`` references, depth first (as confluent_kafka's own Avro
        deserializer resolves them); each subject version once (a diamond is one type)."""
        seen = set() if seen is None else seen
        texts: list[str] = []
        for ref in schema.references or ():
            key = (str(ref.subject), int(ref.version or 0))
            if key in seen:
                continue
            seen.add(key)
            try:
                version = self._client.get_version(key[0], key[1])
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404 or exc.error_code in _NOT_FOUND:
                    continue  # its id's schema then does not parse: a dead letter, said so
                raise RegistryUnavailable(f"schema registry {self.url}: {exc}") from None
            except Exception as exc:  # connection errors, timeouts, TLS failures
                raise RegistryUnavailable(f"schema registry {self.url}: "
                                          f"{type(exc).__name__}: {exc}") from None
            texts += [*self._referenced(version.schema, seen), version.schema.schema_str or ""]
        return tuple(texts)

    def register(self, subject: str, kind: SchemaType, text: str) -> int:
        """Register ``text`` under ``subject`` (or find it there): its schema id.
        SchemaRefused when the registry refuses it (409: incompatible with the subject's
        compatibility rule; 422: not a valid schema), RegistryUnavailable when it does not
        answer."""
        try:
            return int(self._client.register_schema(subject, Schema(text, kind.value)))
        except SchemaRegistryError as exc:
            if exc.http_status_code in (409, 422):
                raise SchemaRefused(f"schema registry {self.url} refused the schema of "
                                    f"subject {subject}: {exc}") from None
            raise RegistryUnavailable(f"schema registry {self.url}: {exc}") from None
        except Exception as exc:  # connection errors, timeouts, TLS failures
            raise RegistryUnavailable(f"schema registry {self.url}: "
                                      f"{type(exc).__name__}: {exc}") from None

    def _get(self, schema_id: int, fmt: str | None) -> Schema | None:
        try:
            return self._client.get_schema(schema_id, fmt=fmt)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404 or exc.error_code in _NOT_FOUND:
                return None
            raise RegistryUnavailable(f"schema registry {self.url}: {exc}") from None
        except Exception as exc:  # httpx's connection errors, timeouts, TLS failures
            raise RegistryUnavailable(f"schema registry {self.url}: "
                                      f"{type(exc).__name__}: {exc}") from None


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
