"""The keys service's own rules against the real database: keys stored only as keyed hashes, secrets
encrypted and bound to their owner, master-key rotation, and no development secrets in production."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentry_common.db import make_engine, make_sessionmaker
from agentry_common.errors import NotFound, Unauthorized
from agentry_dev.stack import Stack
from agentry_keys.models import ApiKey, Secret
from agentry_keys.repository import KeysRepository
from agentry_keys.service import KeyRing, KeysService
from agentry_keys.settings import DEV_MASTER_KEYS

OLD = "old:" + base64.b64encode(b"o" * 32).decode()
NEW = "new:" + base64.b64encode(b"n" * 32).decode()
OTHER = "other:" + base64.b64encode(b"x" * 32).decode()


@pytest.fixture(scope="module")
def keys_db(servers: Stack) -> str:
    """A database of its own: rotation re-encrypts every secret it finds, which the shared one must not see."""

    import agentry_keys
    from agentry_common.db import upgrade

    url = servers.create_database("keys")
    upgrade(Path(agentry_keys.__file__).parent / "migrations", url)
    return url


@pytest.fixture
async def sessions(keys_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(keys_db, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_an_issued_key_is_stored_only_as_a_keyed_hash_and_verifies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    keys = KeysService("pepper", KeyRing(OLD))
    async with sessions() as session, session.begin():
        issued = await keys.issue(KeysRepository(session), "aep_hash_test", "owner-1")
    assert issued.api_key.startswith("aek_") and len(issued.api_key) >= 4 + 32
    async with sessions() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.endpoint_id == "aep_hash_test"))
        assert row is not None and issued.api_key.encode() not in row.key_hash and len(row.key_hash) == 32
        assert row.prefix == issued.api_key[:12]
        verdict = await keys.verify(KeysRepository(session), issued.api_key)
        assert verdict.endpoint_id == "aep_hash_test"
        with pytest.raises(Unauthorized):  # another pepper, another hash: the key means nothing elsewhere
            await KeysService("other-pepper", KeyRing(OLD)).verify(KeysRepository(session), issued.api_key)


async def test_rotation_re_encrypts_every_secret_under_the_new_key_and_the_old_key_can_go(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = KeysService("pepper", KeyRing(OLD))
    ids = []
    async with sessions() as session, session.begin():
        for i in range(7):
            ids.append(await old.store_secret(KeysRepository(session), "owner-rot", f"sk-test-secret-rot-{i}", None))

    rotated = KeysService("pepper", KeyRing(f"{NEW},{OLD}"))
    total = 0
    while True:
        async with sessions() as session, session.begin():
            done = await rotated.reencrypt(KeysRepository(session), batch=3)
        total += done
        if done < 3:
            break
    assert total >= 7

    new_only = KeysService("pepper", KeyRing(NEW))
    async with sessions() as session:
        for i, secret_id in enumerate(ids):
            assert await new_only.resolve_secret(KeysRepository(session), secret_id, "owner-rot") == (
                f"sk-test-secret-rot-{i}"
            )
            row = await session.get(Secret, secret_id)
            assert row is not None and row.key_id == "new" and b"sk-test-secret" not in row.ciphertext
        with pytest.raises(NotFound):  # bound to its owner: another owner cannot resolve it
            await new_only.resolve_secret(KeysRepository(session), ids[0], "someone-else")


def test_rotate_command_re_encrypts_and_names_secrets_under_keys_missing_from_the_ring(keys_db: str) -> None:
    def rotate(ring: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": keys_db, "MASTER_KEYS": ring}
        return subprocess.run([sys.executable, "-m", "agentry_keys.rotate"], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    everything = f"{NEW},{OLD},{DEV_MASTER_KEYS}"
    out = rotate(everything)
    assert out.returncode == 0, out.stderr
    assert "re-encrypted" in out.stdout and "'new'" in out.stdout
    out = rotate(OTHER)
    assert out.returncode == 1 and "'new'" in out.stderr  # everything is under 'new', which this ring lacks


@pytest.mark.parametrize(
    ("module", "variable"),
    [("agentry_keys.settings", "KEY_PEPPER"), ("agentry_gateway.settings", "JWT_SECRET")],
)
def test_production_refuses_to_start_with_a_development_secret(module: str, variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KEY_PEPPER", "MASTER_KEYS", "JWT_SECRET")}
    env["ENVIRONMENT"] = "production"
    out = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode != 0
    assert variable in out.stderr
