"""What the webhooks process holds while it runs, built in the lifespan (`agentry_common.container`)."""

from __future__ import annotations

from typing import Annotated

from faststream import Context
from faststream.nats import NatsBroker

from agentry_common.container import CONTAINER, ServiceContainer, SqlDatabase
from agentry_common.secrets import SecretCache

from ..repository import WebhooksRepository
from ..settings import Settings
from .scheduler import DeliveryScheduler


class Webhooks(ServiceContainer):
    settings: Settings

    def __init__(self, settings: Settings, broker: NatsBroker):
        super().__init__(settings, broker)
        self.database = SqlDatabase(settings.database_url, pool_size=settings.db_pool_size)
        self.unit_of_work = self.database.unit_of_work(WebhooksRepository)
        self.scheduler = DeliveryScheduler(settings, self.unit_of_work)

    async def start(self) -> None:
        settings = self.settings
        secrets = SecretCache(
            self.nc, rpc_timeout_s=settings.rpc_timeout_s, ttl_s=settings.secret_cache_ttl_s,
            max_entries=settings.secret_cache_size,
        )  # fmt: skip
        await secrets.start()  # a deleted webhook's secret leaves memory on the keys service's secrets.changed
        self.scheduler.start(secrets)

    async def stop(self) -> None:
        await self.scheduler.stop()


# A FastStream handler's parameter: the running process's container.
WebhooksDep = Annotated[Webhooks, Context(CONTAINER)]
