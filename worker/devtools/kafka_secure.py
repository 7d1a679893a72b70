"""The local broker's optional secure listener on ``port + 2``.

SASL/SCRAM-SHA-512 for one user (``--sasl USER:PASSWORD``), TLS with a throwaway CA
(``--tls``, see kafka_tls.py), or both (SASL_SSL). The PLAINTEXT listener stays, for the
broker itself and for tools. For development and tests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.devtools import kafka_tls
from worker.errors import ConfigError


class LocalBroker(Protocol):
    """What this module needs of kafka_local.LocalBroker (which imports this module)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def bootstrap(self) -> str: ...


@dataclass(frozen=True)
class Security:
    """The extra listener on ``port + 2``: SASL/SCRAM-SHA-512 for one user, TLS, or both."""

    user: str | None = None
    password: str | None = None
    tls: bool = False

    @staticmethod
    def parse(sasl: str | None, tls: bool) -> Security:
        if sasl is None:
            return Security(tls=tls)
        user, sep, password = sasl.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--sasl: expected USER:PASSWORD (for example --sasl "
                              "alice:alice-secret)")
        if len(password) < 3 or any(c in user for c in ",=\"\\ "):
            raise ConfigError("--sasl: the user may not hold , = \" \\ or spaces, and the "
                              "password needs at least 3 characters")
        return Security(user, password, tls)

    @property
    def enabled(self) -> bool:
        return self.user is not None or self.tls

    @property
    def protocol(self) -> str:
        sasl = self.user is not None
        return "SASL_SSL" if sasl and self.tls else "SASL_PLAINTEXT" if sasl else "SSL"


def secure_port(b: LocalBroker) -> int:
    return b.port + 2


def client_properties(b: LocalBroker, security: Security) -> dict[str, str]:
    """The librdkafka properties a client needs for the secure listener."""
    props = {"security.protocol": security.protocol}
    if security.user is not None:
        props |= {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": security.user,
                  "sasl.password": security.password or ""}
    if security.tls:
        props["ssl.ca.location"] = str(b.state_dir / "tls" / "ca.pem")
    return props


def client_hints(b: LocalBroker, security: Security) -> list[str]:
    """What to pass to a command to use the secure listener (the password not repeated)."""
    if not security.enabled:
        return []
    flags = " ".join(f"--kafka {k}={'PASSWORD' if k == 'sasl.password' else v}"
                     for k, v in client_properties(b, security).items())
    return [f"{security.protocol} listener on {b.host}:{secure_port(b)}: "
            f"--bootstrap {b.host}:{secure_port(b)} {flags}"]


def listener_lines(b: LocalBroker, security: Security) -> list[str]:
    """server.properties lines of the listeners: PLAINTEXT, CONTROLLER and the secure one."""
    ctl = f"{b.host}:{b.port + 1}"
    names = [f"PLAINTEXT://{b.bootstrap}", f"CONTROLLER://{ctl}"]
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if security.enabled:
        names.append(f"SECURE://{b.host}:{secure_port(b)}")
        protocols += f",SECURE:{security.protocol}"
    lines = [f"listeners={','.join(names)}", f"advertised.listeners={','.join(names)}",
             f"listener.security.protocol.map={protocols}"]
    if security.user is not None:
        lines += ["listener.name.secure.sasl.enabled.mechanisms=SCRAM-SHA-512",
                  "listener.name.secure.scram-sha-512.sasl.jaas.config="
                  "org.apache.kafka.common.security.scram.ScramLoginModule required;"]
    if security.tls:
        tls = kafka_tls.broker_tls(b.state_dir / "tls", b.host)
        lines += [f"listener.name.secure.ssl.keystore.location={tls.keystore}",
                  "listener.name.secure.ssl.keystore.type=PKCS12",
                  f"listener.name.secure.ssl.keystore.password={tls.password}",
                  f"listener.name.secure.ssl.key.password={tls.password}"]
    return lines
