"""Request-scoped dependencies: the process's components, the unit of work, and who is calling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentry_common.errors import Forbidden, ValidationFailed

from ..auth import JwtVerifier, KeyVerifier, User
from ..catalog_cache import EndpointCache
from ..dispatch import Dispatcher
from ..ratelimit import Limits
from ..repository import CatalogRepository
from ..schemas import UNSTORABLE_TEXT, unstorable
from ..service import Catalog
from ..settings import Settings
from ..spend import SpendCaps


@dataclass
class Gateway:
    """Everything a request needs, built once per process when the broker connection is up."""

    settings: Settings
    nc: Client
    sessions: async_sessionmaker[AsyncSession]
    catalog: Catalog
    cache: EndpointCache
    dispatcher: Dispatcher
    keys: KeyVerifier
    jwt: JwtVerifier
    limits: Limits
    spend: SpendCaps

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[CatalogRepository]:
        """One transaction: committed when the block ends, rolled back when it raises. What it stored in the
        keys service is removed again if it does not commit, and what it stopped using there only once it has
        (`CatalogRepository.on_rollback` / `on_commit`)."""
        async with self.sessions() as session:
            repo = CatalogRepository(session)
            try:
                async with session.begin():
                    yield repo
            except BaseException:
                await repo.settle(committed=False)
                raise
            await repo.settle(committed=True)


async def get_gateway(request: Request) -> Gateway:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def storable_params(request: Request) -> None:
    """Path and query values reach SQL and events like bodies do: refuse a URL-decoded `%00` with a 422."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if unstorable(name) or unstorable(value):
            raise ValidationFailed(f"{'parameter' if unstorable(name) else name}: {UNSTORABLE_TEXT}")


async def current_user(
    gw: GatewayDep,
    authorization: Annotated[str | None, Header(description="`Bearer <JWT>`")] = None,
) -> User:
    return await gw.jwt.user(authorization)


CurrentUser = Annotated[User, Depends(current_user)]


async def current_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("platform operators only", code="admin_required")
    return user


CurrentAdmin = Annotated[User, Depends(current_admin)]
