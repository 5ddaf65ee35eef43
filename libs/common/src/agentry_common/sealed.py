"""Replies only their asker can read: HPKE (RFC 9180, X25519 / HKDF-SHA256 / ChaCha20-Poly1305) from
`cryptography`.

The keys service answers `secrets.resolve` with a decrypted secret. Inbox permissions (bus_permissions) keep
other accounts from subscribing to the runner's inbox, but an account that may use JetStream's API could
still capture the inbox's subject in a stream of its own. So the runner also sends a public key of its own
process with each request, and the keys service seals the value to it: whoever copies the reply off the bus,
stream or operator, gets ciphertext. The private key never leaves the runner process.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReplyKey:
    """A process's key pair for sealed replies; `public` goes into requests, `open` reads the answers."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = _b64(self._private.public_key().public_bytes_raw())

    def open(self, sealed: str, context: str) -> str:
        """The value sealed for this key under `context` (raises `ValueError` if it was not)."""
        try:
            return _SUITE.decrypt(_unb64(sealed), self._private, info=context.encode()).decode()
        except Exception as err:  # InvalidTag, bad base64, wrong length: all mean "not for us"
            raise ValueError("the reply is not sealed for this process") from err


def seal(value: str, public_key: str, context: str) -> str:
    """`value` readable only with the private key of `public_key` (base64url, 32 bytes), bound to `context`
    (the secret's id: a reply cannot be passed off as another secret's). Raises `ValueError` on a bad key."""
    try:
        key = X25519PublicKey.from_public_bytes(_unb64(public_key))
    except Exception as err:
        raise ValueError("reply_key is not an X25519 public key (32 bytes, base64url)") from err
    return _b64(_SUITE.encrypt(value.encode(), key, info=context.encode()))
