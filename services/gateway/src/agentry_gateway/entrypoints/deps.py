"""Request-scoped dependencies: the process's container (its components and unit of work), and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from agentry_common.container import CONTAINER
from agentry_common.errors import Forbidden, ValidationFailed

from ..auth import User
from ..schemas import UNSTORABLE_TEXT, unstorable
from .container import Gateway as Gateway  # re-exported: routes type their helpers with it


async def get_gateway(request: Request) -> Gateway:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    gateway: Gateway = getattr(request.app.state, CONTAINER)
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
