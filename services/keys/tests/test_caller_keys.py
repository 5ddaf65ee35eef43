"""Many keys per endpoint in the keys service, against the real database: the migration that turns each existing
key into its endpoint's `default` key, rotation with a grace period, revocation and expiry, and batched uses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import agentry_keys
from agentry_common.db import make_engine, make_sessionmaker, upgrade
from agentry_common.errors import NotFound, Unauthorized
from agentry_common.requests import CreateKey
from agentry_dev.stack import Stack
from agentry_keys.repository import KeysRepository
from agentry_keys.service import KeyRing, KeysService, hash_key

MIGRATIONS = Path(agentry_keys.__file__).parent / "migrations"
RING = KeyRing("k:" + "a" * 43 + "=")


@pytest.fixture(scope="module")
def keys_db(servers: Stack) -> str:
    url = servers.create_database("keys")
    upgrade(MIGRATIONS, url)
    return url


@pytest.fixture
async def sessions(keys_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(keys_db, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_each_existing_key_becomes_its_endpoints_default_key_and_keeps_working(servers: Stack) -> None:
    url = servers.create_database("keys")
    upgrade(MIGRATIONS, url, "44c0a6b8684d")  # one key per endpoint, as before caller keys
    raw = "aek_" + "k" * 43
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO keys.api_keys (endpoint_id, owner_id, key_hash, prefix) VALUES (%s, %s, %s, %s)",
            ("aep_old", "owner-old", hash_key(b"pepper", raw), raw[:12]),
        )
    upgrade(MIGRATIONS, url)
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            verdict = await KeysService("pepper", RING).verify(KeysRepository(session), raw)
            keys = await KeysRepository(session).keys("aep_old")
    finally:
        await engine.dispose()
    assert verdict.endpoint_id == "aep_old" and verdict.key_id is not None and verdict.key_id.startswith("key_")
    assert [(k.name, k.revoked_at, k.spend_cap_period) for k in keys] == [("default", None, "month")]


async def test_regenerating_default_keeps_the_old_key_for_its_grace_and_carries_its_limits(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    keys = KeysService("pepper", RING)
    async with sessions() as session, session.begin():
        repo = KeysRepository(session)
        first = await keys.issue(repo, "aep_grace", "owner-1")
        default = (await repo.keys("aep_grace"))[0]
        await keys.update(repo, "aep_grace", default.id, {"rate_limit_per_minute": 9, "spend_cap_cents": 50})
    async with sessions() as session, session.begin():
        second = await keys.issue(KeysRepository(session), "aep_grace", "owner-1", grace_seconds=3600)
    async with sessions() as session, session.begin():
        third = await keys.issue(KeysRepository(session), "aep_grace", "owner-1")  # no grace: at once
    async with sessions() as session:
        repo = KeysRepository(session)
        old = await keys.verify(repo, first.api_key)  # within its hour of grace
        assert old.revoked_at is not None and old.revoked_at > datetime.now(UTC) + timedelta(minutes=59)
        with pytest.raises(Unauthorized) as refused:
            await keys.verify(repo, second.api_key)
        assert refused.value.code == "invalid_api_key"
        new = await keys.verify(repo, third.api_key)
        assert new.revoked_at is None and (new.rate_limit_per_minute, new.spend_cap_cents) == (9, 50)
        assert [k.name for k in await repo.keys("aep_grace")] == ["default"] * 3


async def test_revoked_and_expired_keys_fail_with_their_own_codes_and_stay_listed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    keys = KeysService("pepper", RING)
    soon = datetime.now(UTC) + timedelta(hours=1)
    async with sessions() as session, session.begin():
        repo = KeysRepository(session)
        a = await keys.create(repo, CreateKey(endpoint_id="aep_rev", owner_id="o", name="a", expires_at=soon))
        b = await keys.create(repo, CreateKey(endpoint_id="aep_rev", owner_id="o", name="b"))
    async with sessions() as session, session.begin():
        repo = KeysRepository(session)
        assert (await keys.verify(repo, a.api_key)).expires_at == soon
        await keys.update(repo, "aep_rev", a.key.id, {"expires_at": datetime.now(UTC) - timedelta(seconds=1)})
        await keys.revoke(repo, "aep_rev", b.key.id)
        with pytest.raises(NotFound):
            await keys.revoke(repo, "aep_other", b.key.id)  # not that endpoint's key
    async with sessions() as session:
        repo = KeysRepository(session)
        for raw, code in ((a.api_key, "api_key_expired"), (b.api_key, "invalid_api_key")):
            with pytest.raises(Unauthorized) as refused:
                await keys.verify(repo, raw)
            assert refused.value.code == code
        listed = await repo.keys("aep_rev")
        assert [k.name for k in listed] == ["a", "b"] and listed[1].revoked_at is not None


async def test_reported_uses_only_move_last_used_at_forward(sessions: async_sessionmaker[AsyncSession]) -> None:
    keys = KeysService("pepper", RING)
    async with sessions() as session, session.begin():
        key = (await keys.create(KeysRepository(session), CreateKey(endpoint_id="aep_u", owner_id="o", name="u"))).key
    late, early = datetime.now(UTC), datetime.now(UTC) - timedelta(minutes=5)
    for at in (late, early):  # two gateways' reports, arriving out of order
        async with sessions() as session, session.begin():
            await KeysRepository(session).mark_used({key.id: at})
    async with sessions() as session:
        assert (await KeysRepository(session).keys("aep_u"))[0].last_used_at == late


async def test_keys_expiring_within_the_week_are_announced_once_per_expiry_and_revoked_ones_never(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    keys = KeysService("pepper", RING)
    now = datetime.now(UTC)
    ep = f"aep_exp_{uuid.uuid4().hex[:6]}"

    def key(name: str, expires_at: datetime | None) -> CreateKey:
        return CreateKey(endpoint_id=ep, owner_id="owner-exp", name=name, expires_at=expires_at)

    async with sessions() as session, session.begin():
        repo = KeysRepository(session)
        soon = (await keys.create(repo, key("soon", now + timedelta(days=3)))).key
        later = (await keys.create(repo, key("later", now + timedelta(days=8)))).key
        await keys.create(repo, key("never", None))
        revoked = (await keys.create(repo, key("revoked", now + timedelta(days=2)))).key
        await keys.revoke(repo, ep, revoked.id)
        gone = (await keys.create(repo, key("gone", now + timedelta(days=1)))).key
        await keys.update(repo, ep, gone.id, {"expires_at": now - timedelta(seconds=1)})  # already expired

    async def announced(at: datetime) -> list[tuple[str, datetime]]:
        async with sessions() as session, session.begin():
            events = await keys.expiring(KeysRepository(session), at, 100)
        return [(e.key_id, e.expires_at) for e in events if e.endpoint_id == ep]

    assert await announced(now) == [(soon.id, now + timedelta(days=3))]
    assert await announced(now) == []  # once
    moved = now + timedelta(days=5)
    async with sessions() as session, session.begin():
        await keys.update(KeysRepository(session), ep, soon.id, {"expires_at": moved})
    assert await announced(now) == [(soon.id, moved)]  # a new expiry: announced again
    # A day later, "later" is within the week; the rest stay silent.
    assert await announced(now + timedelta(days=1, minutes=1)) == [(later.id, now + timedelta(days=8))]
