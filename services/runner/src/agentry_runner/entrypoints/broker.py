"""NATS entrypoints of the runner: `runs.get` / `runs.list` / `tools.list` in the `runner` queue group, and the
consumer of `run.requested` (see `consumer`), started with the process."""

from __future__ import annotations

import logging

from faststream.nats import NatsRouter
from nats.aio.client import Client

from agentry_common import subjects
from agentry_common.db import make_engine
from agentry_common.requests import GetRun, ListRuns, ListTools, RunPage, RunRecord, ToolList
from agentry_common.rpc import serve

from ..database import Database
from ..service import HttpClients, RunnerService
from ..settings import settings
from ..tool_listing import list_tools as list_server_tools
from .consumer import RunConsumer

QUEUE = "runner"
# The engine answers /readyz; the runner's statements go through its own pool (see `database`).
engine = make_engine(settings.database_url, pool_size=1)
router = NatsRouter()


class Runtime:
    """What exists only while the process is connected: the service, its HTTP pools and the consumer."""

    service: RunnerService | None = None
    consumer: RunConsumer | None = None
    clients: HttpClients | None = None
    db: Database | None = None

    @classmethod
    def current(cls) -> RunnerService:
        assert cls.service is not None, "runner not started"
        return cls.service

    @classmethod
    async def start(cls, nc: Client) -> None:
        # Request lines of HTTP clients name URLs, which may carry credentials; keep them out of the logs.
        for name in ("httpx", "httpx2", "httpcore", "httpcore2", "mcp"):
            logging.getLogger(name).setLevel(logging.WARNING)
        cls.clients = HttpClients(settings)
        cls.db = Database(settings.database_url, size=settings.db_pool_size)
        cls.service = RunnerService(settings, nc, cls.db, cls.clients)
        await cls.service.secrets.start()
        await cls.service.tool_cache.start(nc)
        cls.consumer = RunConsumer(cls.service, nc, settings)
        await cls.consumer.start()

    @classmethod
    async def stop(cls) -> None:
        if cls.consumer is not None:
            await cls.consumer.stop()
        if cls.service is not None:
            cls.service.secrets.stop()
        if cls.clients is not None:
            await cls.clients.aclose()
        if cls.db is not None:
            await cls.db.close()


@router.subscriber(subjects.RUNS_GET, queue=QUEUE)
@serve
async def get_run(cmd: GetRun) -> RunRecord:
    return await Runtime.current().get(cmd.run_id)


@router.subscriber(subjects.RUNS_LIST, queue=QUEUE)
@serve
async def list_runs(cmd: ListRuns) -> RunPage:
    return await Runtime.current().page(cmd.endpoint_id, cmd.limit, cmd.cursor, cmd.key_id)


@router.subscriber(subjects.TOOLS_LIST, queue=QUEUE)
@serve
async def list_tools(cmd: ListTools) -> ToolList:
    service = Runtime.current()
    return await list_server_tools(cmd, service.secrets, service.clients, service.tool_cache)
