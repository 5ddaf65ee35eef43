"""The runner's connection pool, against the session's real PostgreSQL: a pooled connection the server dropped
is replaced without the caller noticing, a failed statement leaves its connection usable, and the pool keeps
at most `size` idle connections."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from agentry_common.stack import Stack
from agentry_runner.database import Database, conninfo


async def _backend_pids(db: Database) -> set[int]:
    return {conn.info.backend_pid for conn, _ in db._idle}


async def test_a_connection_the_server_dropped_is_replaced_and_the_statement_retried(servers: Stack) -> None:
    db = Database(servers.database_url, size=2)
    try:
        assert await db.fetch("SELECT 1 AS one", {}) == [{"one": 1}]
        (pid,) = await _backend_pids(db)
        async with await psycopg.AsyncConnection.connect(conninfo(servers.database_url), autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        rows = await db.fetch("SELECT pg_backend_pid() AS pid", {})
        assert rows[0]["pid"] != pid
        assert await _backend_pids(db) == {rows[0]["pid"]}
    finally:
        await db.close()


async def test_a_failed_statement_raises_and_its_connection_stays_usable(servers: Stack) -> None:
    db = Database(servers.database_url, size=2)
    try:
        await db.fetch("SELECT 1", {})
        before = await _backend_pids(db)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await db.fetch("SELECT 1 / 0", {})
        assert await _backend_pids(db) == before
        assert await db.fetch("SELECT %(x)s::int AS x", {"x": 7}) == [{"x": 7}]
    finally:
        await db.close()


async def test_at_most_size_connections_stay_idle_after_a_peak(servers: Stack) -> None:
    db = Database(servers.database_url, size=2)
    try:
        await asyncio.gather(*(db.fetch("SELECT pg_sleep(0.05)", {}) for _ in range(4)))
        assert len(db._idle) == 2
    finally:
        await db.close()
    assert db._idle == []
