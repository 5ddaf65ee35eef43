"""All SQL of the keys service."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import ApiKey, Secret


class KeysRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def put_key(self, endpoint_id: str, owner_id: str, key_hash: bytes, prefix: str) -> None:
        stmt = insert(ApiKey).values(endpoint_id=endpoint_id, owner_id=owner_id, key_hash=key_hash, prefix=prefix)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ApiKey.endpoint_id],
            set_={"key_hash": key_hash, "prefix": prefix, "created_at": stmt.excluded.created_at},
        )
        await self.session.execute(stmt)

    async def find_key(self, key_hash: bytes) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
        return result.scalar_one_or_none()

    async def delete_key(self, endpoint_id: str) -> bool:
        result = await self.session.execute(delete(ApiKey).where(ApiKey.endpoint_id == endpoint_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

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
