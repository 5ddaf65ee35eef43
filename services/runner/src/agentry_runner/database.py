"""The runner's connections to PostgreSQL: a psycopg_pool pool of connections in autocommit.

Every statement of the runner is a single idempotent statement (an upsert that never replaces a terminal row,
or a read), so it needs no transaction and no ORM session around it. Through SQLAlchemy's session a run's
upsert cost ~3x the CPU of the statement itself, plus a pre-ping round trip per checkout; here a statement is
one round trip. A pooled connection that went stale (PostgreSQL restarted, an idle timeout) is noticed when
it fails, dropped by the pool, and the statement retried once on another connection — what the pre-ping
achieved, without its round trip on every checkout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
Connection = psycopg.AsyncConnection[DictRow]


def conninfo(url: str) -> str:
    """A libpq URL from the SQLAlchemy-style one the settings may carry."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


class Database:
    """psycopg_pool's pool of autocommit connections, with one retry for a connection the server dropped."""

    def __init__(self, url: str, *, size: int = 10, recycle_s: float = 1800.0, wait_s: float = 30.0):
        # `size` connections stay open; up to twice as many at a peak, each closed after a minute idle.
        self.pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo(url),
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=size,
            max_size=2 * size,
            max_lifetime=recycle_s,
            max_idle=60.0,
            timeout=wait_s,
            name="runner",
            open=False,
        )

    async def fetch(self, sql: str, params: Mapping[str, Any], *, wait_s: float | None = None) -> list[dict[str, Any]]:
        """Execute one statement and return its rows (none for a statement without RETURNING).

        A pool that cannot hand out a connection in time raises `PoolTimeout` (an `OperationalError`).
        """
        await self.pool.open()  # a no-op once open; the pool fills itself in the background
        for attempt in (1, 2):
            async with self.pool.connection(timeout=wait_s) as conn:
                try:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchall() if cursor.description else []
                except psycopg.OperationalError:
                    if attempt == 2 or not conn.broken:  # the statement failed, not the connection
                        raise
                    log.info("a pooled database connection was gone; checking the others, then retrying")
            # After a PostgreSQL restart every idle connection is gone, not only this one: drop them all now
            # rather than failing one statement per stale connection.
            await self.pool.check()
        raise AssertionError("unreachable")

    async def ping(self, wait_s: float = 1.0) -> bool:
        """`/readyz`: a pooled connection answers within `wait_s` (a pool too busy to lend one is not ready)."""
        try:
            await self.fetch("SELECT 1", {}, wait_s=wait_s)
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.pool.close()
