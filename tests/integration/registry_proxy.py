"""A registry that asks for HTTP basic authentication and a client certificate over TLS: an
HTTPS reverse proxy (the standard library's, in a thread) in front of the tests' Apicurio,
whose in-memory distribution has neither without a Keycloak. Its certificate is a
throwaway self-signed one for 127.0.0.1 (openssl), which is also the CA that signs
nothing else, the client certificate and the CA the proxy trusts for clients."""

from __future__ import annotations

import base64
import http.server
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def self_signed(folder: Path, name: str) -> Pem:
    cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return Pem(cert, key)


@dataclass
class Seen:
    authorized: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class AuthProxy:
    """https://127.0.0.1:<port>/... -> ``upstream``/..., for ``user``:``password`` only."""

    def __init__(self, upstream: str, user: str, password: str, server: Pem,
                 client_ca: Path) -> None:
        self.seen = Seen()
        want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if self.headers.get("Authorization") != want:
                    with seen.lock:
                        seen.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="registry"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with seen.lock:
                    seen.authorized += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "accept")}
                req = urllib.request.Request(upstream + self.path, body, headers,
                                             method=self.command)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as exc:
                    status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type")
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(server.cert, server.key)
        ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: a client certificate is required
        ctx.load_verify_locations(client_ca)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
