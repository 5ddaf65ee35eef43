"""What the gateway process holds while it runs, built in the lifespan (`agentry_common.container`); routes
reach it as `GatewayDep` (`deps`)."""

from __future__ import annotations

from typing import Annotated

from faststream import Context
from faststream.nats import NatsBroker

from agentry_common.container import CONTAINER, ServiceContainer, SqlDatabase

from ..auth import JwtVerifier, KeyVerifier
from ..catalog_cache import EndpointCache
from ..client_ip import TrustedProxies
from ..dispatch import Dispatcher
from ..ratelimit import Limits
from ..repository import CatalogRepository
from ..service import Catalog
from ..settings import Settings
from ..spend import SpendCaps


class Gateway(ServiceContainer):
    """Everything a request needs, built once per process when the broker connection is up."""

    settings: Settings

    def __init__(self, settings: Settings, broker: NatsBroker):
        super().__init__(settings, broker)
        TrustedProxies.parse(settings.trusted_proxies)  # a malformed TRUSTED_PROXIES stops the start, not each run
        nc = self.nc
        self.database = SqlDatabase(settings.database_url, pool_size=settings.db_pool_size)
        self.sessions = self.database.sessions
        # What a change stored in the keys service is removed again if it does not commit, and what it stopped
        # using there only once it has (`CatalogRepository.on_rollback` / `on_commit`).
        self.unit_of_work = self.database.unit_of_work(CatalogRepository, settle=CatalogRepository.settle)
        self.catalog = Catalog(nc, settings)
        self.cache = EndpointCache(self.sessions, nc, settings.catalog_cache_ttl_s)
        self.dispatcher = Dispatcher(nc, settings)
        self.keys = KeyVerifier(nc, settings)
        self.jwt = JwtVerifier(settings)
        self.limits = Limits.from_settings(nc, settings)
        self.spend = SpendCaps(nc, settings)

    async def start(self) -> None:
        await self.keys.start()
        await self.dispatcher.start()
        await self.limits.start()


# A FastStream handler's parameter: the running process's container (routes use `deps.GatewayDep`).
GatewayContext = Annotated[Gateway, Context(CONTAINER)]
