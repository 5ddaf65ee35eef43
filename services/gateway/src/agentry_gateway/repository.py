"""All SQL of the gateway: workspaces, MCP servers, endpoints. Every read is scoped to its owner."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Endpoint, McpServer, Workspace

log = logging.getLogger(__name__)
Action = Callable[[], Awaitable[object]]


class CatalogRepository:
    """The SQL of one unit of work, and what it did elsewhere (the keys service) that depends on its outcome."""

    def __init__(self, session: AsyncSession):
        self.session = session
        self._on_rollback: list[tuple[str, Action]] = []
        self._on_commit: list[tuple[str, Action]] = []

    def on_rollback(self, what: str, action: Action) -> None:
        """Undo `action`'s counterpart if this unit of work does not commit (a secret stored for a row that
        was never written)."""
        self._on_rollback.append((what, action))

    def on_commit(self, what: str, action: Action) -> None:
        """Run `action` once this unit of work has committed (delete what a committed change stopped using)."""
        self._on_commit.append((what, action))

    async def settle(self, committed: bool) -> None:
        """Best effort: what cannot be done now (the keys service away) stays behind unused, and is logged."""
        for what, action in reversed(self._on_rollback) if not committed else self._on_commit:
            try:
                await action()
            except Exception as err:
                log.warning("could not %s: %s; it stays behind unused", what, type(err).__name__)

    # workspaces
    async def add(self, row: Workspace | McpServer | Endpoint) -> None:
        self.session.add(row)
        await self.session.flush()

    async def workspaces(self, owner_id: str) -> list[Workspace]:
        rows = await self.session.scalars(
            select(Workspace).where(Workspace.owner_id == owner_id).order_by(Workspace.created_at)
        )
        return list(rows)

    async def workspace(self, owner_id: str, workspace_id: str) -> Workspace | None:
        return await self.session.scalar(
            select(Workspace).where(Workspace.id == workspace_id, Workspace.owner_id == owner_id)
        )

    async def workspace_has_endpoints(self, workspace_id: str) -> bool:
        return bool(await self.session.scalar(select(exists().where(Endpoint.workspace_id == workspace_id))))

    async def delete_workspace(self, workspace_id: str) -> None:
        await self.session.execute(delete(Workspace).where(Workspace.id == workspace_id))

    # MCP servers
    async def servers(self, workspace_id: str) -> list[McpServer]:
        rows = await self.session.scalars(
            select(McpServer).where(McpServer.workspace_id == workspace_id).order_by(McpServer.created_at)
        )
        return list(rows)

    async def server(self, workspace_id: str, server_id: str) -> McpServer | None:
        return await self.session.scalar(
            select(McpServer).where(McpServer.id == server_id, McpServer.workspace_id == workspace_id)
        )

    async def server_slug_taken(self, workspace_id: str, slug: str) -> bool:
        q = exists().where(McpServer.workspace_id == workspace_id, McpServer.slug == slug)
        return bool(await self.session.scalar(select(q)))

    async def delete_server(self, server_id: str) -> None:
        await self.session.execute(delete(McpServer).where(McpServer.id == server_id))

    # endpoints
    async def endpoints(self, owner_id: str, workspace_id: str | None = None) -> list[Endpoint]:
        q = select(Endpoint).where(Endpoint.owner_id == owner_id)
        if workspace_id is not None:
            q = q.where(Endpoint.workspace_id == workspace_id)
        return list(await self.session.scalars(q.order_by(Endpoint.created_at)))

    async def endpoint(self, owner_id: str, endpoint_id: str) -> Endpoint | None:
        return await self.session.scalar(
            select(Endpoint).where(Endpoint.id == endpoint_id, Endpoint.owner_id == owner_id)
        )

    async def endpoint_by_slug(self, slug: str) -> Endpoint | None:
        return await self.session.scalar(select(Endpoint).where(Endpoint.slug == slug))

    async def endpoint_by_id(self, endpoint_id: str) -> Endpoint | None:
        return await self.session.get(Endpoint, endpoint_id)

    async def slugs_like(self, base: str) -> set[str]:
        rows = await self.session.scalars(select(Endpoint.slug).where(Endpoint.slug.like(f"{base}%")))
        return set(rows)

    async def update_endpoint(self, endpoint_id: str, values: dict[str, Any]) -> None:
        await self.session.execute(update(Endpoint).where(Endpoint.id == endpoint_id).values(**values))

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self.session.execute(delete(Endpoint).where(Endpoint.id == endpoint_id))
