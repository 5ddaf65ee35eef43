"""Who is calling: management users by JWT, run callers by endpoint API key (verified by the keys service).

Key verdicts are cached per process, keyed by a hash of the key (never the key itself). The keys service
broadcasts `keys.revoked`; every gateway drops that endpoint's verdicts at once, and the TTL is a backstop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

import jwt
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentry_common import asyncapi, rpc, subjects
from agentry_common.errors import ServiceUnavailable, Unauthorized
from agentry_common.events import KeysRevoked
from agentry_common.requests import VerifiedKey, VerifyKey

from .metrics import KEY_VERIFICATIONS
from .settings import Settings

log = logging.getLogger(__name__)

asyncapi.consumes(
    subjects.KEYS_REVOKED, KeysRevoked, by="gateway",
    description="Every gateway replica drops its cached verdicts for the endpoint at once.",
)  # fmt: skip


@dataclass(frozen=True)
class User:
    id: str
    is_admin: bool = False


class JwtVerifier:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None

    def _decode(self, token: str) -> dict[str, object]:
        options = {"require": ["sub", "exp"]}
        kwargs: dict[str, object] = {"issuer": self.settings.jwt_issuer, "audience": self.settings.jwt_audience}
        if self.settings.jwt_audience is None:
            options["verify_aud"] = False  # type: ignore[assignment]
        if self.jwks is not None:
            key = self.jwks.get_signing_key_from_jwt(token).key
            return jwt.decode(token, key, algorithms=["RS256", "ES256"], options=options, **kwargs)  # type: ignore[arg-type]
        return jwt.decode(token, self.settings.jwt_secret, algorithms=["HS256"], options=options, **kwargs)  # type: ignore[arg-type]

    async def user(self, authorization: str | None) -> User:
        if not authorization:
            raise Unauthorized("missing bearer token", code="unauthorized")
        if not authorization.startswith("Bearer "):
            raise Unauthorized("the Authorization header lacks its scheme: send `Bearer <token>`", code="unauthorized")
        token = authorization[7:].strip()
        try:
            claims = await asyncio.to_thread(self._decode, token) if self.jwks else self._decode(token)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except (jwt.PyJWTError, ValueError):
            raise Unauthorized("invalid token", code="invalid_token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("invalid token", code="invalid_token")
        return User(id=sub, is_admin=claims.get("role") == "admin")


def _digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


class KeyVerifier:
    def __init__(self, nc: Client, settings: Settings):
        self.nc = nc
        self.settings = settings
        self._cache: dict[bytes, tuple[VerifiedKey, float]] = {}
        self._revoked_at: dict[str, float] = {}

    async def start(self) -> None:
        await self.nc.subscribe(subjects.KEYS_REVOKED, cb=self._on_revoked)

    async def _on_revoked(self, msg: Msg) -> None:
        endpoint_id = orjson.loads(msg.data).get("endpoint_id")
        now = time.monotonic()
        # A revocation matters only to verifications already under way when it came (they may not cache
        # their verdict); those end within the RPC timeout, so older revocations are forgotten.
        horizon = now - self.settings.rpc_timeout_s - 1.0
        self._revoked_at = {e: t for e, t in self._revoked_at.items() if t > horizon}
        self._revoked_at[endpoint_id] = now
        for digest, (verdict, _) in list(self._cache.items()):
            if verdict.endpoint_id == endpoint_id:
                self._cache.pop(digest, None)

    async def verify(self, api_key: str) -> VerifiedKey:
        digest = _digest(api_key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            KEY_VERIFICATIONS.labels("cache", "valid").inc()
            return hit[0]
        if not api_key.startswith("aek_") or len(api_key) > 256:
            KEY_VERIFICATIONS.labels("format", "invalid").inc()
            raise Unauthorized("invalid API key", code="invalid_api_key")
        try:
            verdict = await rpc.call(
                self.nc,
                subjects.KEYS_VERIFY,
                VerifyKey(api_key=api_key),
                VerifiedKey,
                timeout=self.settings.rpc_timeout_s,
                unavailable="cannot verify API keys right now (keys service unavailable)",
            )
        except Unauthorized:
            KEY_VERIFICATIONS.labels("keys_service", "invalid").inc()
            raise
        except ServiceUnavailable:
            KEY_VERIFICATIONS.labels("keys_service", "unavailable").inc()
            raise
        KEY_VERIFICATIONS.labels("keys_service", "valid").inc()
        # A revocation that arrived while we were asking makes this verdict stale: don't cache it.
        if self._revoked_at.get(verdict.endpoint_id, 0.0) < now and self.settings.key_cache_ttl_s > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (verdict, now + self.settings.key_cache_ttl_s)
        return verdict
