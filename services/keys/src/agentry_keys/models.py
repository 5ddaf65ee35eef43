"""Tables of the `keys` schema: endpoint API keys (hashed only) and encrypted secrets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, MetaData, String, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "keys"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class ApiKey(Base):
    """One caller key of an endpoint: only its keyed hash and a display prefix are kept. A revoked key stays,
    for audit; `revoked_at` in the future is a grace period (a replaced `default` key)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_keys_api_keys_expires_at", "expires_at", postgresql_where=text("expires_at IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(64), index=True)
    owner_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(60))
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    spend_cap_cents: Mapped[int | None] = mapped_column(BigInteger)
    spend_cap_period: Mapped[str] = mapped_column(String(8), server_default="month")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The expiry `key.expiring` was announced for: a changed `expires_at` differs from it, and is announced again.
    expiry_announced_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Secret(Base):
    """A secret value (BYO LLM key, MCP headers) encrypted with AES-256-GCM under one key of the ring."""

    __tablename__ = "secrets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(255), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[bytes] = mapped_column(LargeBinary(12))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
