"""Who is calling: management users by JWT, run callers by endpoint API key (verified by the keys service).

Key verdicts are cached per process, keyed by a hash of the key (never the key itself). The keys service
broadcasts `keys.revoked`; every gateway drops that endpoint's verdicts at once, and the TTL is a backstop.
A verdict carries the key's expiry and the end of its grace period, checked on every use: expiry needs no message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from nats.aio.client import Client

from agentry_common import rpc, subjects
from agentry_common.errors import ServiceUnavailable, Unauthorized
from agentry_common.requests import Done, KeysUsed, VerifiedKey, VerifyKey

from .metrics import KEY_VERIFICATIONS
from .settings import Settings

log = logging.getLogger(__name__)
USE_REPORT_INTERVAL_S = 60.0


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


def check_verdict(verdict: VerifiedKey) -> None:
    """The keys service's rule, applied to a cached verdict: revoked (its grace over) or expired by now."""
    if verdict.revoked_at is None and verdict.expires_at is None:
        return
    now = datetime.now(UTC)
    if verdict.revoked_at is not None and verdict.revoked_at <= now:
        KEY_VERIFICATIONS.labels("cache", "invalid").inc()
        raise Unauthorized("invalid API key", code="invalid_api_key")
    if verdict.expires_at is not None and verdict.expires_at <= now:
        KEY_VERIFICATIONS.labels("cache", "expired").inc()
        raise Unauthorized("this API key has expired", code="api_key_expired")


class KeyVerifier:
    def __init__(self, nc: Client, settings: Settings):
        self.nc = nc
        self.settings = settings
        self._cache: dict[bytes, tuple[VerifiedKey, float]] = {}
        self._revoked_at: dict[str, float] = {}
        self._reported: dict[str, float] = {}  # key id → when its use was last queued for the keys service
        self._unreported: dict[str, datetime] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flights: dict[bytes, asyncio.Future[VerifiedKey]] = {}  # verifications under way, by key digest

    async def start(self) -> None:
        """Start reporting key uses; revocations come in through `revoked` (`entrypoints/broker.py`)."""
        self._flusher = asyncio.create_task(self._flush_uses())

    def used(self, key_id: str) -> None:
        """Note a key's use. `last_used_at` needs no write per run: at most one report a minute per key."""
        now = time.monotonic()
        if now - self._reported.get(key_id, -math.inf) < USE_REPORT_INTERVAL_S:
            return
        self._reported[key_id] = now
        self._unreported[key_id] = datetime.now(UTC)

    async def _flush_uses(self) -> None:
        while True:
            await asyncio.sleep(self.settings.key_use_flush_s)
            horizon = time.monotonic() - USE_REPORT_INTERVAL_S
            self._reported = {k: t for k, t in self._reported.items() if t > horizon}
            if not self._unreported:
                continue
            batch, self._unreported = self._unreported, {}
            try:
                await rpc.call(
                    self.nc, subjects.KEYS_USED, KeysUsed(used=batch), Done, timeout=self.settings.rpc_timeout_s
                )
            except Exception as err:  # a lost report only leaves last_used_at a little older
                log.warning("could not report key uses: %s", type(err).__name__)

    def revoked(self, endpoint_id: str) -> None:
        """An endpoint's key changed (rotated, revoked, limits): drop its cached verdicts."""
        now = time.monotonic()
        # A revocation matters only to verifications already under way when it came (they may not cache
        # their verdict); those end within the RPC timeout, so older revocations are forgotten.
        horizon = now - self.settings.rpc_timeout_s - 1.0
        self._revoked_at = {e: t for e, t in self._revoked_at.items() if t > horizon}
        self._revoked_at[endpoint_id] = now
        self._flights.clear()  # a request from now on asks afresh rather than join a question asked before
        for digest, (verdict, _) in list(self._cache.items()):
            if verdict.endpoint_id == endpoint_id:
                self._cache.pop(digest, None)

    async def verify(self, api_key: str) -> VerifiedKey:
        digest = _digest(api_key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            check_verdict(hit[0])
            KEY_VERIFICATIONS.labels("cache", "valid").inc()
            return hit[0]
        if not api_key.startswith("aek_") or len(api_key) > 256:
            KEY_VERIFICATIONS.labels("format", "invalid").inc()
            raise Unauthorized("invalid API key", code="invalid_api_key")
        # Concurrent requests with the same uncached key share one question to the keys service: a burst of a
        # new caller's runs is one verification, not one each.
        flight = self._flights.get(digest)
        if flight is None:
            flight = asyncio.ensure_future(self._ask(api_key, digest, now))
            self._flights[digest] = flight
            flight.add_done_callback(lambda done: self._landed(digest, done))
        return await asyncio.shield(flight)

    def _landed(self, digest: bytes, flight: asyncio.Future[VerifiedKey]) -> None:
        if self._flights.get(digest) is flight:
            del self._flights[digest]
        if not flight.cancelled():
            flight.exception()  # retrieved here too: every request that waited may have gone

    async def _ask(self, api_key: str, digest: bytes, now: float) -> VerifiedKey:
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
