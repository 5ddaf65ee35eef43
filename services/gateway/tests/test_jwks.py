"""Management JWTs verified against a JWKS URL (RS256), with issuer and audience enforced."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agentry_dev.stack import Stack

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def _token(**claims: Any) -> str:
    base = {"sub": "jwks-user", "iss": "https://idp.example", "aud": "agentry", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, KEY, algorithm="RS256", headers={"kid": "k1"})


def test_rs256_tokens_from_the_jwks_are_accepted_with_the_right_issuer_and_audience(
    stack: Stack, jwks_url: str
) -> None:
    gateway = stack.start_service(
        "gateway", JWT_JWKS_URL=jwks_url, JWT_ISSUER="https://idp.example", JWT_AUDIENCE="agentry"
    )
    try:

        def status(token: str) -> int:
            return httpx.get(f"{gateway.url}/api/workspaces", headers={"Authorization": f"Bearer {token}"}).status_code

        assert status(_token()) == 200
        assert status(_token(aud="someone-else")) == 401
        assert status(_token(iss="https://evil.example")) == 401
        assert status(_token(exp=int(time.time()) - 5)) == 401
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        claims = {"sub": "x", "iss": "https://idp.example", "aud": "agentry", "exp": int(time.time()) + 60}
        forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "k1"})
        assert status(forged) == 401
    finally:
        gateway.stop()
        stack.services.remove(gateway)
