"""HTTP shapes of caller keys (`/api/agent-endpoints/{id}/keys`). Field descriptions reach the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from .schemas import Strict

KeyName = Annotated[str, StringConstraints(min_length=1, max_length=60)]
SpendCapPeriod = Literal["day", "month", "total"]


def _future(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("must carry a time zone (ISO 8601, e.g. 2030-01-01T00:00:00Z)")
    if value <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return value


class KeyCreate(Strict):
    name: KeyName = Field(description="Who the key is for (a customer, an app); 1-60 characters.")
    expires_at: datetime | None = Field(
        None, strict=False, description="ISO 8601, in the future; after it the key answers 401 `api_key_expired`."
    )
    rate_limit_per_minute: int | None = Field(
        None, ge=1, le=100000, description="Runs per minute for this key, on top of the endpoint's limits."
    )
    spend_cap_cents: int | None = Field(
        None, ge=0, le=100_000_000, description="Most the key's runs may cost (per-run prices) in a period."
    )
    spend_cap_period: SpendCapPeriod = Field("month", description="The cap's period (calendar, UTC).")

    _expiry = field_validator("expires_at")(_future)


class KeyUpdate(Strict):
    """Partial: only the fields sent change; `null` removes an expiry, a limit or a cap."""

    name: KeyName | None = Field(None, description="1-60 characters.")
    expires_at: datetime | None = Field(None, strict=False, description="ISO 8601, in the future, or null.")
    rate_limit_per_minute: int | None = Field(None, ge=1, le=100000, description="1-100000, or null.")
    spend_cap_cents: int | None = Field(None, ge=0, le=100_000_000, description="0-100000000, or null.")
    spend_cap_period: SpendCapPeriod | None = Field(None, description="`day`, `month` or `total`.")

    _expiry = field_validator("expires_at")(_future)


class KeyPublic(BaseModel):
    id: str = Field(description="`key_…`")
    name: str
    prefix: str = Field(description="The key's first characters, for recognising it; never the key.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Kept current to within about a minute.")
    rate_limit_per_minute: int | None
    spend_cap_cents: int | None
    spend_cap_period: SpendCapPeriod
    spent_cents: int | None = Field(
        description="Per-run prices of the key's runs in the cap's current period (reserved ones included); "
        "null for a key without a cap."
    )
    revoked_at: datetime | None = Field(description="When it stopped (or, in a grace period, stops) working.")


class KeyOut(BaseModel):
    key: KeyPublic


class KeyCreated(BaseModel):
    key: KeyPublic
    api_key: str = Field(description="The raw key (`aek_…`); shown only in this answer.")


class KeyList(BaseModel):
    keys: list[KeyPublic]


class RegenerateBody(Strict):
    grace_seconds: int = Field(
        0, ge=0, le=86400, description="How long the replaced `default` key keeps working (0: it stops at once)."
    )
