"""All SQL of the keys service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import ApiKey, Secret


class KeysRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def add_key(self, key: ApiKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def find_key(self, key_hash: bytes) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
        return result.scalar_one_or_none()

    async def keys(self, endpoint_id: str, key_id: str | None = None) -> list[ApiKey]:
        query = select(ApiKey).where(ApiKey.endpoint_id == endpoint_id)
        if key_id is not None:
            query = query.where(ApiKey.id == key_id)
        return list(await self.session.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))

    async def live_default(self, endpoint_id: str) -> ApiKey | None:
        """The endpoint's current `default` key (not revoked, nor in a grace period), locked for replacement."""
        query = (
            select(ApiKey)
            .where(ApiKey.endpoint_id == endpoint_id, ApiKey.name == "default", ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc())
            .limit(1)
            .with_for_update()
        )
        return (await self.session.scalars(query)).first()

    async def update_key(self, endpoint_id: str, key_id: str, values: dict[str, Any]) -> ApiKey | None:
        stmt = update(ApiKey).where(ApiKey.endpoint_id == endpoint_id, ApiKey.id == key_id).values(**values)
        key = (await self.session.scalars(stmt.returning(ApiKey))).first()
        return key

    async def revoke_key(self, endpoint_id: str, key_id: str, at: datetime) -> bool:
        """Revoke now (also ending a grace period early); an already revoked key keeps its time."""
        found = await self.session.scalar(
            select(ApiKey.id).where(ApiKey.endpoint_id == endpoint_id, ApiKey.id == key_id).with_for_update()
        )
        if found is None:
            return False
        await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, (ApiKey.revoked_at.is_(None)) | (ApiKey.revoked_at > at))
            .values(revoked_at=at)
        )
        return True

    async def delete_keys(self, endpoint_id: str) -> bool:
        result = await self.session.execute(delete(ApiKey).where(ApiKey.endpoint_id == endpoint_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def mark_used(self, used: dict[str, datetime]) -> None:
        """Move each key's last use forward (never back: gateways report out of order)."""
        for key_id, at in sorted(used.items()):  # sorted: concurrent batches lock rows in the same order
            await self.session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < at))
                .values(last_used_at=at)
            )

    async def expiring(self, after: datetime, until: datetime, limit: int) -> list[ApiKey]:
        """Unrevoked keys expiring in (after, until] not yet announced for that expiry, soonest first; locked, and
        skipped by a concurrent replica's sweep."""
        query = (
            select(ApiKey)
            .where(
                ApiKey.revoked_at.is_(None),
                ApiKey.expires_at > after,
                ApiKey.expires_at <= until,
                ApiKey.expiry_announced_for.is_distinct_from(ApiKey.expires_at),
            )
            .order_by(ApiKey.expires_at, ApiKey.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(await self.session.scalars(query))

    async def put_secret(self, secret: Secret) -> None:
        await self.session.merge(secret)

    async def get_secret(self, secret_id: str) -> Secret | None:
        return await self.session.get(Secret, secret_id)

    async def secrets_under(self, key_ids: list[str], limit: int) -> list[Secret]:
        """Secrets encrypted under these master keys, locked so concurrent rotations don't collide."""
        query = select(Secret).where(Secret.key_id.in_(key_ids)).order_by(Secret.id).limit(limit)
        return list(await self.session.scalars(query.with_for_update(skip_locked=True)))

    async def count_not_under(self, key_ids: list[str]) -> dict[str, int]:
        """How many secrets each master key outside `key_ids` still holds."""
        query = select(Secret.key_id, func.count()).where(Secret.key_id.not_in(key_ids)).group_by(Secret.key_id)
        return {key_id: count for key_id, count in (await self.session.execute(query)).tuples()}

    async def delete_secret(self, secret_id: str) -> None:
        await self.session.execute(delete(Secret).where(Secret.id == secret_id))
