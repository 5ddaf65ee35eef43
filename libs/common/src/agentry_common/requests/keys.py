"""Requests the keys service answers about API keys: issue, verify, revoke, manage, report their use."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ..events import Contract


class IssueKey(Contract):
    """Issue the endpoint's `default` key, replacing (and revoking) the previous `default` one."""

    endpoint_id: str
    owner_id: str
    grace_seconds: int = Field(0, ge=0, le=86400, description="How long the replaced key keeps working.")


class IssuedKey(Contract):
    api_key: str = Field(description="The raw key; returned once, never stored in clear.")
    prefix: str


class VerifyKey(Contract):
    api_key: str


SpendCapPeriod = Literal["day", "month", "total"]


class VerifiedKey(Contract):
    """A valid key's verdict. Gateways cache it and check `expires_at`/`revoked_at` themselves on every use,
    so expiry and the end of a grace period need no message."""

    endpoint_id: str
    owner_id: str
    key_id: str | None = Field(None, description="The key (`key_…`); runs carry it.")
    expires_at: datetime | None = Field(None, description="When the key expires (401 `api_key_expired`).")
    revoked_at: datetime | None = Field(None, description="A future revocation: the end of a grace period.")
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod = "month"


class RevokeKey(Contract):
    """Revoke one key of the endpoint (`key_id`), or delete all its keys (the endpoint is going away)."""

    endpoint_id: str
    key_id: str | None = None


class KeyFields(Contract):
    name: str
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod = "month"


class CreateKey(KeyFields):
    endpoint_id: str
    owner_id: str


class UpdateKey(Contract):
    endpoint_id: str
    key_id: str
    name: str | None = None
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod | None = None
    sent: list[str] = Field(description="The fields to change (the others above are not read).")


class KeyInfo(KeyFields):
    """A key as its owner sees it: never the key, only a display prefix."""

    id: str
    endpoint_id: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class CreatedKey(Contract):
    key: KeyInfo
    api_key: str = Field(description="The raw key; returned once, never stored in clear.")


class ListKeys(Contract):
    endpoint_id: str
    key_id: str | None = None


class KeyList(Contract):
    keys: list[KeyInfo]


class KeysUsed(Contract):
    """Gateways report, at most once a minute per key, when keys were last used (no write per run)."""

    used: dict[str, datetime] = Field(description="By key id: the latest use this gateway saw.")
