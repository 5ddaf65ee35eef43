"""What the keys process holds while it runs, built in the lifespan (`agentry_common.container`)."""

from __future__ import annotations

from typing import Annotated

from faststream import Context
from faststream.nats import NatsBroker

from agentry_common.container import CONTAINER, ServiceContainer, SqlDatabase

from ..repository import KeysRepository
from ..service import KeyRing, KeysService
from ..settings import Settings
from .expiring import sweep_expiring


class Keys(ServiceContainer):
    def __init__(self, settings: Settings, broker: NatsBroker):
        super().__init__(settings, broker)
        self.database = SqlDatabase(settings.database_url, pool_size=settings.db_pool_size)
        self.unit_of_work = self.database.unit_of_work(KeysRepository)
        self.service = KeysService(settings.key_pepper, KeyRing(settings.master_keys))
        self.expiry_sweep_s = settings.key_expiry_sweep_s

    async def start(self) -> None:
        if self.expiry_sweep_s > 0:
            self.spawn(sweep_expiring(self, self.expiry_sweep_s))


# A FastStream handler's parameter: the running process's container.
KeysDep = Annotated[Keys, Context(CONTAINER)]
