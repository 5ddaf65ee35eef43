"""One way to wire a service: its container and its unit of work.

A service's container holds what exists only while the process runs (database pool, session factory, units of
work, publishers, background tasks). `create_service_app` builds it in the lifespan once the broker is connected,
hands it to FastStream handlers through the broker's context (`Context(CONTAINER)`) and to FastAPI routes through
`app.state.container`, starts it after the broker and stops it before; `/readyz` asks it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

from faststream.nats import NatsBroker
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from . import db
from .settings import ServiceSettings

# The FastStream context key and the `app.state` attribute the container is found under.
CONTAINER = "container"

R = TypeVar("R")


class Database(Protocol):
    """What the shell needs of a service's database: a readiness probe and a close at shutdown."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class UnitOfWork(Generic[R]):
    """`async with uow() as repo:` — one transaction per use: it commits when the block ends and rolls back when
    it raises. `settle(repo, committed)` runs after the outcome is known, for work that must follow it (the
    gateway removes from the keys service what a rolled-back change stored there)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        repository: Callable[[AsyncSession], R],
        *,
        settle: Callable[[R, bool], Awaitable[None]] | None = None,
    ):
        self.sessions = sessions
        self.repository = repository
        self.settle = settle

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[R]:
        async with self.sessions() as session:
            repo = self.repository(session)
            try:
                async with session.begin():
                    yield repo
            except BaseException:
                if self.settle is not None:
                    await self.settle(repo, False)
                raise
            if self.settle is not None:
                await self.settle(repo, True)


class SqlDatabase:
    """A SQLAlchemy engine and its session factory; units of work are made from it."""

    def __init__(self, url: str, *, pool_size: int = 10):
        self.engine: AsyncEngine = db.make_engine(url, pool_size=pool_size)
        self.sessions = db.make_sessionmaker(self.engine)

    def unit_of_work(
        self,
        repository: Callable[[AsyncSession], R],
        *,
        settle: Callable[[R, bool], Awaitable[None]] | None = None,
    ) -> UnitOfWork[R]:
        return UnitOfWork(self.sessions, repository, settle=settle)

    async def ping(self) -> bool:
        return await db.ping(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()


class ServiceContainer:
    """Base of every service's container. Built with the broker connected; `start` runs after the broker started
    (its subscribers may already be answering), `stop` before the broker stops, `close` after it."""

    database: Database | None = None

    def __init__(self, settings: ServiceSettings, broker: NatsBroker):
        self.settings = settings
        self.broker = broker
        self.stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def nc(self) -> Client:
        return self.broker.connection

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `work` in the background; shutdown waits for it after `stopping` is set and `stop` returned."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start(self) -> None:
        """Start what runs beside the handlers (consumers, loops, caches)."""

    async def stop(self) -> None:
        """Stop what `start` started; the broker is still connected."""

    async def shutdown(self) -> None:
        self.stopping.set()
        await self.stop()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        """After the broker stopped: release the database."""
        if self.database is not None:
            await self.database.close()

    async def checks(self) -> dict[str, bool]:
        """What `/readyz` reports."""
        broker = self.broker
        checks = {"nats": broker._connection is not None and broker.connection.is_connected}
        if self.database is not None:
            checks["postgres"] = await self.database.ping()
        return checks
