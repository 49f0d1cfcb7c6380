"""Helpers shared by the API tests: a local JWKS server (RSA key generated here, served on 127.0.0.1 by
http.server in a thread), token minting and a hashed API-keys file. No network beyond loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from deployments.auth import SCOPE_READ, SCOPE_WRITE, new_api_key

ISSUER = "https://idp.test.invalid/"
AUDIENCE = "fraudgen-api"


@dataclass
class Idp:
    """A tiny identity provider: one signing key published as a JWKS on a loopback port."""

    url: str
    key: rsa.RSAPrivateKey
    kid: str

    def token(
        self,
        scopes: str = f"{SCOPE_READ} {SCOPE_WRITE}",
        sub: str = "svc-1",
        expires_in: int = 300,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": sub,
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + expires_in,
            "scope": scopes,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def idp() -> Iterator[Idp]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "test-key-1", "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Idp(url=f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key=key, kid="test-key-1")
    server.shutdown()
    server.server_close()


@dataclass
class Keys:
    path: Path
    full: str  # read + write
    read_only: str


@pytest.fixture(scope="session")
def api_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    full, full_entry = new_api_key("ci")
    read_only, read_entry = new_api_key("reader", frozenset({SCOPE_READ}))
    path = tmp_path_factory.mktemp("keys") / "api_keys.json"
    path.write_text(json.dumps({"keys": [full_entry, read_entry]}))
    return Keys(path=path, full=full, read_only=read_only)
