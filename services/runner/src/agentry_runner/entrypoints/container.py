"""What the runner process holds while it runs, built in the lifespan (`agentry_common.container`).

The one exception to the shared wiring: the runner has no SQLAlchemy engine, session factory or
`agentry_common` unit of work. Each of its statements is a single idempotent upsert or read, sent through its own
psycopg pool in autocommit (`database`): measured, a run's upsert costs ~0.3 ms of CPU and one round trip that
way against ~1.5-2 ms plus a pre-ping round trip through an `AsyncSession` (docs/benchmarks.md, "Runner: run
records through a small psycopg pool"). `/readyz` pings that pool; there is no second engine.
"""

from __future__ import annotations

import logging
from typing import Annotated

from faststream import Context
from faststream.nats import NatsBroker

from agentry_common.container import CONTAINER, ServiceContainer

from ..database import Database
from ..service import HttpClients, RunnerService
from ..settings import Settings
from .consumer import RunConsumer


class Runner(ServiceContainer):
    def __init__(self, settings: Settings, broker: NatsBroker):
        super().__init__(settings, broker)
        # Request lines of HTTP clients name URLs, which may carry credentials; keep them out of the logs.
        for name in ("httpx", "httpx2", "httpcore", "httpcore2", "mcp"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.clients = HttpClients(settings)
        self.db = Database(settings.database_url, size=settings.db_pool_size)
        self.database = self.db
        self.service = RunnerService(settings, self.nc, self.db, self.clients)
        self.consumer = RunConsumer(self.service, self.nc, settings)

    async def start(self) -> None:
        await self.service.secrets.start()
        await self.service.tool_cache.start(self.nc)
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        self.service.secrets.stop()
        await self.clients.aclose()


# A FastStream handler's parameter: the running process's container.
RunnerDep = Annotated[Runner, Context(CONTAINER)]
