"""The runner's connections to PostgreSQL: a small pool of psycopg connections in autocommit.

Every statement of the runner is a single idempotent statement (an upsert that never replaces a terminal row,
or a read), so it needs no transaction and no ORM session around it. Through SQLAlchemy's session a run's
upsert cost ~3x the CPU of the statement itself, plus a pre-ping round trip per checkout; here a statement is
one round trip. A pooled connection that went stale (PostgreSQL restarted, an idle timeout) is noticed when
it fails, dropped, and the statement retried once on a fresh connection — what the pre-ping achieved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

log = logging.getLogger(__name__)
Connection = psycopg.AsyncConnection[DictRow]
Pooled = tuple[Connection, float]  # the connection and when it was opened (monotonic)


def conninfo(url: str) -> str:
    """A libpq URL from the SQLAlchemy-style one the settings may carry."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


class Database:
    def __init__(self, url: str, *, size: int = 10, recycle_s: float = 1800.0, wait_s: float = 30.0):
        self.conninfo = conninfo(url)
        self.size = size  # connections kept while idle; up to twice as many at a peak
        self.recycle_s = recycle_s
        self.wait_s = wait_s
        self._slots = asyncio.Semaphore(2 * size)
        self._idle: list[Pooled] = []  # LIFO: the warmest connection first
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def fetch(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute one statement and return its rows (none for a statement without RETURNING)."""
        async with asyncio.timeout(self.wait_s):
            await self._slots.acquire()
        try:
            pooled = self._take_idle()
            if pooled is not None:
                try:
                    return await self._run(pooled, sql, params)
                except psycopg.OperationalError:
                    if not pooled[0].broken:  # the statement failed, not the connection
                        raise
                    log.info("a pooled database connection was gone; retrying on a new one")
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, row_factory=dict_row)
            return await self._run((conn, time.monotonic()), sql, params)
        finally:
            self._slots.release()

    async def _run(self, pooled: Pooled, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        conn = pooled[0]
        try:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall() if cursor.description else []
        except psycopg.Error:
            # Autocommit: a failed statement leaves no transaction behind, so a live connection is reusable.
            self._give_back(pooled)
            raise
        except BaseException:
            self._discard(conn)  # cancelled mid-statement: the connection's state is unknown
            raise
        self._give_back(pooled)
        return rows

    def _take_idle(self) -> Pooled | None:
        while self._idle:
            pooled = self._idle.pop()
            if not pooled[0].closed and time.monotonic() - pooled[1] < self.recycle_s:
                return pooled
            self._discard(pooled[0])
        return None

    def _give_back(self, pooled: Pooled) -> None:
        conn = pooled[0]
        if self._closed or conn.broken or conn.closed or len(self._idle) >= self.size:
            self._discard(conn)
        else:
            self._idle.append(pooled)

    def _discard(self, conn: Connection) -> None:
        if conn.closed:
            return
        task = asyncio.get_running_loop().create_task(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        self._closed = True
        for conn, _ in self._idle:
            self._discard(conn)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
