"""The schema registry of a chaos run (``bench/chaos.py --registry``) and its fault.

With ``--registry`` the events go in Avro, in the Confluent wire format, their schema in a
registry of the run's own (``registry-local``: Apicurio on a free port), and the workers
and ``retrain`` read them with ``--input-format avro``. The poison record stays raw bytes
(not the wire format: a dead letter either way).

The fault, ``registry-pause``: a new schema version (v1 and one more optional field, as a
producer's next release would register) is registered while the registry answers, the
registry is paused (SIGSTOP) for ``--down`` s, and the traffic switches to the new version
at once. The workers have not fetched that schema id yet: they must hold those events
(``/readyz`` 503, "schema registry not reachable") and score them once it answers, none a
dead letter, none lost. Paused, not killed: the local registry keeps its schemas in memory
and forgets them when it dies, where a real registry keeps them
(tests/integration/test_wire_formats.py pauses it for the same reason).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from chaos_parts import free_ports, now_ms  # bench/: the script's own folder is on sys.path
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from worker.devtools import registry_local

REGISTRY_FAULT = "registry-pause"
#: The demo events' fields and their Avro types (worker/devtools/demo.py make_events).
_FIELDS = (("id", "string"), ("ts", "long"), ("card_id", "string"), ("amount", "double"),
           ("hour", "long"), ("merchant_risk", "double"), ("card_age_days", "double"),
           ("velocity_1h", "long"), ("distance_km", "double"), ("foreign", "long"),
           ("online", "long"), ("avg_amount_30d", "double"))
Encode = Callable[[dict[str, Any]], bytes]


def schema_text(version: int) -> str:
    """Version 1: the demo event; each later one adds an optional string field."""
    fields: list[dict[str, Any]] = [{"name": n, "type": t} for n, t in _FIELDS]
    fields += [{"name": f"note_{v}", "type": "string", "default": ""}
               for v in range(2, version + 1)]
    return orjson.dumps({"type": "record", "name": "Event", "fields": fields}).decode()


@dataclass
class Registry:
    """The run's registry, the schema version the traffic writes, and the pause."""

    tmp: Path
    topic: str
    version: int = 1
    reg: registry_local.LocalRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.reg = registry_local.LocalRegistry(port=free_ports(1),
                                                state_root=self.tmp / "registry")

    @property
    def url(self) -> str:
        return self.reg.url

    def args(self) -> list[str]:
        """What the workers and retrain read the inputs with."""
        return ["--input-format", "avro", "--schema-registry", self.url]

    def start(self) -> None:
        registry_local.start(self.reg)

    def encoder(self, version: int) -> Encode:
        """Events -> Avro in the wire format under ``version``, registered now (the
        registry must answer)."""
        ser = AvroSerializer(SchemaRegistryClient({"url": self.url}), schema_text(version))
        ctx = SerializationContext(self.topic, MessageField.VALUE)
        encode: Encode = lambda event: bytes(ser(event, ctx) or b"")  # noqa: E731
        encode({n: ("x" if t == "string" else 0) for n, t in _FIELDS})  # registers it
        return encode

    def pause_with_new_schema(self, switch: Callable[[Encode], None],
                              seconds: float) -> dict[str, Any]:
        """The fault: a new version registered, the registry paused, the traffic switched
        to the new version while it is paused. Its record for the account."""
        self.version += 1
        encode = self.encoder(self.version)
        pid = registry_local.running_pid(self.reg)
        if pid is None:
            raise RuntimeError("the run's registry is not running")
        os.kill(pid, signal.SIGSTOP)
        paused_ms = now_ms()
        try:
            switch(encode)
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return {"schema_version": self.version, "paused_ms": paused_ms,
                "resumed_ms": now_ms()}

    def stop(self) -> None:
        pid = registry_local.running_pid(self.reg)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        registry_local.stop(self.reg)
