"""Keys and secrets: CSPRNG API keys stored as keyed hashes; secrets under AES-256-GCM with a key ring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentry_common.errors import NotFound, Unauthorized
from agentry_common.events import KeyExpiring, new_id
from agentry_common.requests import CreatedKey, CreateKey, IssuedKey, KeyInfo, VerifiedKey

from .models import ApiKey, Secret
from .repository import KeysRepository

KEY_PREFIX = "aek_"
DISPLAY_CHARS = 12  # "aek_" + 8 random characters: enough to recognise a key, far too few to guess it
DEFAULT_NAME = "default"
# `key.expiring` goes out this long before a key expires (or at once, for a key set to expire sooner).
EXPIRING_NOTICE = timedelta(days=7)
# What a new `default` key inherits from the one it replaces: the owner set these for that caller.
_INHERITED = ("rate_limit_per_minute", "spend_cap_cents", "spend_cap_period")


class KeyRing:
    """Master keys by id; the first encrypts, all decrypt, so a new key can be rolled in before re-encryption."""

    def __init__(self, spec: str):
        self.keys: dict[str, AESGCM] = {}
        for item in spec.split(","):
            key_id, _, b64 = item.strip().partition(":")
            raw = base64.b64decode(b64)
            if len(raw) != 32:
                raise ValueError(f"master key {key_id!r} must be 32 bytes (AES-256)")
            self.keys[key_id] = AESGCM(raw)
        self.active_id = next(iter(self.keys))

    def encrypt(self, plaintext: str, owner_id: str) -> tuple[str, bytes, bytes]:
        nonce = os.urandom(12)
        # The owner is bound as associated data: a ciphertext copied to another owner's row will not decrypt.
        ct = self.keys[self.active_id].encrypt(nonce, plaintext.encode(), owner_id.encode())
        return self.active_id, nonce, ct

    def decrypt(self, secret: Secret) -> str:
        aes = self.keys.get(secret.key_id)
        if aes is None:
            raise NotFound("secret's master key is not in the key ring", code="secret_key_missing")
        return aes.decrypt(secret.nonce, secret.ciphertext, secret.owner_id.encode()).decode()


def hash_key(pepper: bytes, api_key: str) -> bytes:
    return hmac.digest(pepper, api_key.encode(), hashlib.sha256)


class KeysService:
    def __init__(self, pepper: str, ring: KeyRing):
        self.pepper = pepper.encode()
        self.ring = ring

    def _new_key(self, endpoint_id: str, owner_id: str, name: str, **fields: Any) -> tuple[ApiKey, str]:
        raw = KEY_PREFIX + secrets.token_urlsafe(32)  # 256 bits from the OS CSPRNG
        key = ApiKey(
            id=new_id("key"),
            endpoint_id=endpoint_id,
            owner_id=owner_id,
            name=name,
            key_hash=hash_key(self.pepper, raw),
            prefix=raw[:DISPLAY_CHARS],
            created_at=datetime.now(UTC),
            **fields,
        )
        return key, raw

    async def issue(self, repo: KeysRepository, endpoint_id: str, owner_id: str, grace_seconds: int = 0) -> IssuedKey:
        """A new `default` key; the one it replaces works `grace_seconds` longer, then never again."""
        old = await repo.live_default(endpoint_id)
        inherited: dict[str, Any] = {}
        if old is not None:
            old.revoked_at = datetime.now(UTC) + timedelta(seconds=grace_seconds)
            inherited = {name: getattr(old, name) for name in _INHERITED}
        key, raw = self._new_key(endpoint_id, owner_id, DEFAULT_NAME, **inherited)
        await repo.add_key(key)
        return IssuedKey(api_key=raw, prefix=key.prefix)

    async def create(self, repo: KeysRepository, cmd: CreateKey) -> CreatedKey:
        fields = cmd.model_dump(exclude={"endpoint_id", "owner_id", "name"})
        key, raw = self._new_key(cmd.endpoint_id, cmd.owner_id, cmd.name, **fields)
        await repo.add_key(key)
        return CreatedKey(key=key_info(key), api_key=raw)

    async def update(self, repo: KeysRepository, endpoint_id: str, key_id: str, changes: dict[str, Any]) -> KeyInfo:
        allowed = {k: v for k, v in changes.items() if k in ("name", "expires_at", *_INHERITED)}
        key = await repo.update_key(endpoint_id, key_id, allowed) if allowed else None
        if key is None and not allowed:
            key = next(iter(await repo.keys(endpoint_id, key_id)), None)
        if key is None:
            raise NotFound("key not found", code="key_not_found")
        return key_info(key)

    async def revoke(self, repo: KeysRepository, endpoint_id: str, key_id: str) -> None:
        if not await repo.revoke_key(endpoint_id, key_id, datetime.now(UTC)):
            raise NotFound("key not found", code="key_not_found")

    async def verify(self, repo: KeysRepository, api_key: str) -> VerifiedKey:
        if not api_key.startswith(KEY_PREFIX):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        found = await repo.find_key(hash_key(self.pepper, api_key))
        verdict = None if found is None else verdict_of(found)
        check_verdict(verdict, datetime.now(UTC))
        assert verdict is not None
        return verdict

    async def expiring(self, repo: KeysRepository, now: datetime, limit: int) -> list[KeyExpiring]:
        """The keys to announce as expiring, marked announced for their expiry in the caller's transaction (which
        publishes the events before it commits)."""
        events = []
        for key in await repo.expiring(now, now + EXPIRING_NOTICE, limit):
            assert key.expires_at is not None  # the query's condition
            key.expiry_announced_for = key.expires_at
            expires_at = key.expires_at.astimezone(UTC)
            events.append(
                KeyExpiring(owner_id=key.owner_id, endpoint_id=key.endpoint_id, key_id=key.id, expires_at=expires_at)
            )
        return events

    async def store_secret(self, repo: KeysRepository, owner_id: str, value: str, secret_id: str | None) -> str:
        key_id, nonce, ct = self.ring.encrypt(value, owner_id)
        secret = Secret(id=secret_id or new_id("sec"), owner_id=owner_id, key_id=key_id, nonce=nonce, ciphertext=ct)
        await repo.put_secret(secret)
        return secret.id

    async def reencrypt(self, repo: KeysRepository, batch: int = 500) -> int:
        """Re-encrypt one batch of secrets under the ring's older keys with its first key; returns how many."""
        older = [key_id for key_id in self.ring.keys if key_id != self.ring.active_id]
        stale = await repo.secrets_under(older, batch) if older else []
        for secret in stale:
            secret.key_id, secret.nonce, secret.ciphertext = self.ring.encrypt(
                self.ring.decrypt(secret), secret.owner_id
            )
        return len(stale)

    async def resolve_secret(self, repo: KeysRepository, secret_id: str, owner_id: str) -> str:
        secret = await repo.get_secret(secret_id)
        if secret is None or secret.owner_id != owner_id:
            raise NotFound("secret not found", code="secret_not_found")
        return self.ring.decrypt(secret)


def key_info(key: ApiKey) -> KeyInfo:
    return KeyInfo.model_validate(key, from_attributes=True)


def verdict_of(key: ApiKey) -> VerifiedKey:
    return VerifiedKey(
        endpoint_id=key.endpoint_id,
        owner_id=key.owner_id,
        key_id=key.id,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        rate_limit_per_minute=key.rate_limit_per_minute,
        spend_cap_cents=key.spend_cap_cents,
        spend_cap_period=key.spend_cap_period,
    )


def check_verdict(verdict: VerifiedKey | None, now: datetime) -> None:
    """The one rule for a key's validity, applied here and by every gateway to its cached verdicts."""
    if verdict is None or (verdict.revoked_at is not None and verdict.revoked_at <= now):
        raise Unauthorized("invalid API key", code="invalid_api_key")
    if verdict.expires_at is not None and verdict.expires_at <= now:
        raise Unauthorized("this API key has expired", code="api_key_expired")
