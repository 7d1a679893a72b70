"""A throwaway certificate authority and broker certificate, made with the JDK's keytool.

For ``kafka-local start --tls`` only: the CA and the broker's key live in the broker's
state folder (``tls/``), valid for 30 days, the broker's certificate naming 127.0.0.1
and localhost so that librdkafka's hostname check passes. Clients trust ``tls/ca.pem``
(``ssl.ca.location``). Nothing here is fit for production.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from worker.errors import KafkaLocalError

VALIDITY_DAYS = "30"


@dataclass(frozen=True)
class BrokerTls:
    keystore: Path  # PKCS12: the broker's key, its certificate and the CA's
    password: str
    ca_pem: Path  # what clients trust


def _keytool(*args: str) -> None:
    proc = subprocess.run(["keytool", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaLocalError(f"keytool {args[0]} failed: {(proc.stdout + proc.stderr).strip()}")


def make_ca(folder: Path, password: str, name: str = "kafka-local throwaway CA") -> Path:
    """A self-signed CA keystore (``ca.p12``) and its certificate as PEM (``ca.pem``)."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "ca.p12"
    store.unlink(missing_ok=True)
    _keytool("-genkeypair", "-alias", "ca", "-dname", f"CN={name}", "-keyalg", "RSA",
             "-keysize", "2048", "-validity", VALIDITY_DAYS, "-ext", "bc:c",
             "-keystore", str(store), "-storetype", "PKCS12", "-storepass", password)
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", str(store),
             "-storepass", password, "-file", str(folder / "ca.pem"))
    return folder / "ca.pem"


def broker_tls(folder: Path, host: str) -> BrokerTls:
    """The broker's keystore, made once per state folder and reused afterwards."""
    keystore, pw_file = folder / "broker.p12", folder / "keystore.password"
    if keystore.exists() and pw_file.exists() and (folder / "ca.pem").exists():
        return BrokerTls(keystore, pw_file.read_text().strip(), folder / "ca.pem")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password = secrets.token_hex(16)
    pw_file.write_text(password + "\n")
    ca_pem = make_ca(folder, password)
    ca_store, csr, signed = str(folder / "ca.p12"), folder / "broker.csr", folder / "broker.pem"
    keystore.unlink(missing_ok=True)
    common = ["-keystore", str(keystore), "-storepass", password]
    _keytool("-genkeypair", "-alias", "broker", "-dname", f"CN={host}", "-keyalg", "RSA",
             "-keysize", "2048", "-validity", VALIDITY_DAYS, "-storetype", "PKCS12", *common)
    _keytool("-certreq", "-alias", "broker", "-file", str(csr), *common)
    _keytool("-gencert", "-alias", "ca", "-keystore", ca_store, "-storepass", password,
             "-infile", str(csr), "-outfile", str(signed), "-rfc", "-validity", VALIDITY_DAYS,
             "-ext", f"SAN=ip:{host},dns:localhost", "-ext", "EKU=serverAuth")
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem), *common)
    _keytool("-importcert", "-alias", "broker", "-file", str(signed), *common)
    return BrokerTls(keystore, password, ca_pem)
