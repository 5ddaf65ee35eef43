"""The runner's connection pool, against the session's real PostgreSQL: connections the server dropped are
replaced without the caller noticing, a failed statement leaves its connection usable, and connections opened
for a peak are kept for the next one instead of being opened and closed per statement."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from agentry_dev.stack import Stack, free_port
from agentry_runner.database import Database, conninfo


@pytest.fixture
async def named(servers: Stack) -> AsyncIterator[tuple[Database, str]]:
    """A pool of 2 whose connections carry an application name of their own, to find their backends."""
    name = f"dbtest-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in servers.database_url else "?"
    db = Database(f"{servers.database_url}{separator}application_name={name}", size=2)
    try:
        yield db, name
    finally:
        await db.close()


async def backends(servers: Stack, name: str) -> set[int]:
    async with await psycopg.AsyncConnection.connect(conninfo(servers.database_url), autocommit=True) as admin:
        cursor = await admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (name,))
        return {row[0] for row in await cursor.fetchall()}


async def test_connections_the_server_dropped_are_replaced_and_the_statement_retried(servers: Stack, named) -> None:
    db, name = named
    assert await db.fetch("SELECT 1 AS one", {}) == [{"one": 1}]
    await db.pool.wait()  # both connections open
    before = await backends(servers, name)
    assert before
    async with await psycopg.AsyncConnection.connect(conninfo(servers.database_url), autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
        )  # fmt: skip  (as a PostgreSQL restart would: every pooled connection)
    rows = await db.fetch("SELECT pg_backend_pid() AS pid", {})
    assert rows[0]["pid"] not in before


async def test_a_failed_statement_raises_and_its_connection_stays_usable(servers: Stack, named) -> None:
    db, name = named
    await db.fetch("SELECT 1", {})
    await db.pool.wait()
    before = await backends(servers, name)
    with pytest.raises(psycopg.errors.DivisionByZero):
        await db.fetch("SELECT 1 / 0", {})
    assert await db.fetch("SELECT %(x)s::int AS x", {"x": 7}) == [{"x": 7}]
    # Every connection is still there: none was closed for the failed statement. (The pool may have opened one
    # more meanwhile, when a statement found both busy on a loaded machine; that is not what this is about.)
    assert before <= await backends(servers, name)


async def test_connections_opened_for_a_peak_are_kept_for_the_next(named) -> None:
    db, _ = named
    pids: set[int] = set()
    for _ in range(3):  # three peaks of 4 statements at once on a pool of 2 (growing to 4)
        rows = await asyncio.gather(*(db.fetch("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)", {}) for _ in range(4)))
        pids |= {r[0]["pid"] for r in rows}
    assert len(pids) <= 4  # the same backends served every peak: none opened per statement


async def test_readiness_pings_the_pool_and_says_no_at_once_when_the_database_is_unreachable(
    servers: Stack, named
) -> None:
    db, _ = named
    assert await db.ping()  # what the runner's /readyz reports as "postgres"
    unreachable = Database(f"postgresql://agentry@127.0.0.1:{free_port()}/agentry", size=1)
    try:
        started = time.monotonic()
        assert not await unreachable.ping(wait_s=1.0)
        assert time.monotonic() - started < 10  # bounded by the ping's wait, not the pool's 30 s
    finally:
        await unreachable.close()
