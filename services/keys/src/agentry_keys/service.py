"""Keys and secrets: CSPRNG API keys stored as keyed hashes; secrets under AES-256-GCM with a key ring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentry_common.errors import NotFound, Unauthorized
from agentry_common.events import new_id
from agentry_common.requests import IssuedKey, VerifiedKey

from .models import Secret
from .repository import KeysRepository

KEY_PREFIX = "aek_"
DISPLAY_CHARS = 12  # "aek_" + 8 random characters: enough to recognise a key, far too few to guess it


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

    async def issue(self, repo: KeysRepository, endpoint_id: str, owner_id: str) -> IssuedKey:
        raw = KEY_PREFIX + secrets.token_urlsafe(32)  # 256 bits from the OS CSPRNG
        await repo.put_key(endpoint_id, owner_id, hash_key(self.pepper, raw), raw[:DISPLAY_CHARS])
        return IssuedKey(api_key=raw, prefix=raw[:DISPLAY_CHARS])

    async def verify(self, repo: KeysRepository, api_key: str) -> VerifiedKey:
        if not api_key.startswith(KEY_PREFIX):
            raise Unauthorized("invalid API key", code="invalid_api_key")
        found = await repo.find_key(hash_key(self.pepper, api_key))
        if found is None:
            raise Unauthorized("invalid API key", code="invalid_api_key")
        return VerifiedKey(endpoint_id=found.endpoint_id, owner_id=found.owner_id)

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
