"""All SQL of the runner service.

The statements are SQL text built once from the `runs` table's columns and executed on a psycopg connection
in autocommit (`database.Database`): each is one statement, one round trip, with no ORM or SQLAlchemy
execution layer between (measured on the run path: ~0.3 ms of CPU per upsert instead of ~1 ms and a pre-ping).
Every statement is idempotent, so the pool may retry one on a fresh connection when a pooled one went stale.
Values are bound the way SQLAlchemy bound them: JSONB as psycopg `Jsonb` (`output` None is SQL NULL), and a
missing column takes the model's Python-side default.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import JSONB

from .database import Database
from .models import TERMINAL, Run, StoredRun
from .outcome import RunOutcome, RunStart

RUNS: Table = Run.__table__  # type: ignore[assignment]  # a declarative class always maps a Table
# The SQL text is assembled from the table's own names and constants, never from a value (S608 below).
_TABLE = f"{RUNS.schema}.{RUNS.name}"
_COLUMNS = tuple(c.name for c in RUNS.c)
_SELECT = ", ".join(_COLUMNS)
_NOT_TERMINAL = f"{_TABLE}.status NOT IN ({', '.join(repr(s) for s in TERMINAL)})"
_VALUES = ", ".join(f"%({c})s" for c in _COLUMNS)
_INSERT = f"INSERT INTO {_TABLE} ({_SELECT}) VALUES ({_VALUES}) ON CONFLICT (id) DO UPDATE"  # noqa: S608
# A terminal row is final: neither a late `running` write nor a second outcome may replace it.
_MARK_RUNNING = f"{_INSERT} SET status = 'running', attempts = EXCLUDED.attempts WHERE {_NOT_TERMINAL}"
_KEPT = ("id", "created_at", "started_at")  # the first attempt's, whatever attempt finishes the run
# Only what the statement may have kept comes back: the rest of the stored row is the values just written.
_FINISH_TAIL = (
    f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in _COLUMNS if c not in _KEPT)}"
    f" WHERE {_NOT_TERMINAL} RETURNING {', '.join(_KEPT)}"
)
_GET = f"SELECT {_SELECT} FROM {_TABLE} WHERE id = %(run_id)s"  # noqa: S608
_PAGE = f"SELECT {_SELECT} FROM {_TABLE} WHERE endpoint_id = %(endpoint_id)s"  # noqa: S608
_BY_KEY = " AND key_id = %(key_id)s"
_AFTER = " AND (created_at, id) < (%(created_at)s, %(id)s)"
_NEWEST_FIRST = " ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
# The database (or the pool) is unavailable, rather than a statement refused: a batch fails as a whole.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)
_JSONB = {c.name: c.type.none_as_null for c in RUNS.c if isinstance(c.type, JSONB)}


@functools.cache
def _finish_many(count: int) -> str:
    """The outcome upsert for `count` rows (the i-th row's parameters are suffixed `_i`)."""
    rows = ", ".join("(" + ", ".join(f"%({c}_{i})s" for c in _COLUMNS) + ")" for i in range(count))
    return f"INSERT INTO {_TABLE} ({_SELECT}) VALUES {rows}{_FINISH_TAIL}"  # noqa: S608


def _defaults() -> dict[str, Any]:
    """The model's Python-side column defaults (fresh mutable values each time); other columns are NULL."""
    out: dict[str, Any] = dict.fromkeys(_COLUMNS)
    for column in RUNS.c:
        default = column.default
        if default is not None:
            out[column.name] = default.arg(None) if default.is_callable else default.arg  # type: ignore[attr-defined]
    return out


def _bound(row: dict[str, Any]) -> dict[str, Any]:
    """A complete row's values as the statements bind them (JSONB wrapped)."""
    bound = dict(row)
    for name, none_as_null in _JSONB.items():
        value = bound[name]
        bound[name] = None if value is None and none_as_null else Jsonb(value)
    return bound


def _run(row: dict[str, Any]) -> StoredRun:
    return StoredRun(**row)


# An outcome row waiting for the next write, and where its caller waits for what the write kept.
_Waiting = tuple[dict[str, Any], asyncio.Future[dict[str, Any] | None]]


class Finishes:
    """Outcomes written together: the outcomes of runs that end while an outcome write is in flight wait for
    it and then go in one multi-row upsert (one statement, one commit and fsync), up to `max_rows`.

    A run that ends alone is written at once, as one row, so a run's latency is unchanged; under load a write
    carries several runs' outcomes (one wake-up of PostgreSQL and one of the runner for them all). Each row
    stays independent: the statement keeps the first terminal row of each run, and each caller learns which
    rows were its own. Rows are sorted by id, so two runners' statements lock rows in the same order; a run
    met twice in one batch (two deliveries in this process) waits for the next, since one statement cannot
    upsert a row twice. A batch the server refuses (one row's value out of range, say) is written again row by
    row, so only that run fails; a batch that fails because the database is unavailable fails each caller.
    """

    def __init__(self, db: Database, max_rows: int = 32):
        self.db = db
        self.max_rows = max_rows
        self._waiting: list[_Waiting] = []
        self._writing = False
        self._task: asyncio.Task[None] | None = None  # the background write (a reference keeps it alive)

    async def write(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Write one outcome row; what the statement kept of an earlier row of the run, or None if the run
        already had a terminal row (not ours). Raises what the statement raised."""
        if self._writing:
            future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
            self._waiting.append((row, future))
            return await future
        self._writing = True
        try:
            return await self._write_row(row)
        finally:
            self._drain()

    async def _write_row(self, row: dict[str, Any]) -> dict[str, Any] | None:
        kept = await self.db.fetch(_finish_many(1), _params([row]))
        return kept[0] if kept else None

    def _drain(self) -> None:
        """Hand what came in meanwhile to one background write, or stop writing."""
        self._waiting = [(row, future) for row, future in self._waiting if not future.done()]  # cancelled callers
        if self._waiting:
            self._task = asyncio.get_running_loop().create_task(self._write_waiting())
        else:
            self._writing, self._task = False, None

    async def _write_waiting(self) -> None:
        batch: dict[str, _Waiting] = {}
        later = []
        for row, future in self._waiting:
            if row["id"] in batch or len(batch) >= self.max_rows:
                later.append((row, future))
            else:
                batch[row["id"]] = (row, future)
        self._waiting = later
        taken = sorted(batch.values(), key=lambda item: item[0]["id"])
        try:
            await self._write_batch(taken)
        except BaseException:  # cancelled (shutting down): so is every caller still waiting
            for _, future in [*taken, *self._waiting]:
                future.cancel()
            self._waiting = []
            raise
        finally:
            self._drain()

    async def _write_batch(self, taken: list[_Waiting]) -> None:
        try:
            rows = await self.db.fetch(_finish_many(len(taken)), _params([row for row, _ in taken]))
        except Exception as err:
            if len(taken) == 1 or isinstance(err, _UNAVAILABLE):  # each caller rides the outage out and retries
                for _, future in taken:
                    _settle(future, error=err)
                return
            # The server refused a row (a value out of range, say): that run fails, not the others with it.
            for row, future in taken:
                try:
                    _settle(future, await self._write_row(row))
                except Exception as one:
                    _settle(future, error=one)
            return
        kept = {k["id"]: k for k in rows}
        for row, future in taken:
            _settle(future, kept.get(row["id"]))


def _settle(
    future: asyncio.Future[dict[str, Any] | None], result: dict[str, Any] | None = None, error: Exception | None = None
) -> None:
    """Give a waiting caller its answer, unless it stopped waiting (cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in _bound(row).items()}


class RunsRepository:
    def __init__(self, db: Database, finishes: Finishes):
        self.db = db
        self.finishes = finishes  # the process's one: outcomes are coalesced across its runs

    async def get(self, run_id: str) -> StoredRun | None:
        rows = await self.db.fetch(_GET, {"run_id": run_id})
        return _run(rows[0]) if rows else None

    async def mark_running(self, start: RunStart) -> None:
        """Insert or refresh the `running` row of an attempt; a terminal row is left alone."""
        await self.db.fetch(_MARK_RUNNING, _bound({**_defaults(), **start.row(), "status": "running"}))

    async def finish(self, outcome: RunOutcome) -> tuple[StoredRun, bool]:
        """Record the run's outcome unless one is already recorded.

        Returns the stored terminal row and whether it is ours: the first outcome written wins, so two
        runners that ran the same run (a redelivery while the first was still alive) announce the same one.
        Ours is the values written with what the statement kept of an earlier attempt's row (`_KEPT`).
        """
        row = {**_defaults(), **outcome.row()}
        kept = await self.finishes.write(row)
        if kept is not None:
            return _run({**row, **kept}), True
        existing = await self.get(outcome.id)
        assert existing is not None
        return existing, False

    async def page(
        self, endpoint_id: str, limit: int, after: tuple[datetime, str] | None, key_id: str | None = None
    ) -> list[StoredRun]:
        """Runs of an endpoint (made with one key, if given), newest first, strictly after the keyset position."""
        params: dict[str, Any] = {"endpoint_id": endpoint_id, "limit": limit, "key_id": key_id}
        if after is not None:
            params["created_at"], params["id"] = after
        sql = _PAGE + (_BY_KEY if key_id is not None else "") + (_AFTER if after is not None else "") + _NEWEST_FIRST
        return [_run(row) for row in await self.db.fetch(sql, params)]
