"""The hot path's view of the catalog: endpoint configs by slug, cached per process.

Writes announce `catalog.changed` so every gateway replica drops its copy at once; the TTL is a backstop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import jsonschema
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentry_common import asyncapi, subjects
from agentry_common.errors import NotFound
from agentry_common.events import CatalogChanged, EndpointSnapshot

from .metrics import ENDPOINT_LOOKUPS
from .repository import CatalogRepository
from .service import endpoint_snapshot

log = logging.getLogger(__name__)
asyncapi.publishes(
    subjects.CATALOG_CHANGED, CatalogChanged, by="gateway",
    description="After a change to an endpoint or to a workspace's MCP servers is committed.",
)  # fmt: skip


@dataclass(frozen=True)
class RunnableEndpoint:
    snapshot: EndpointSnapshot
    status: str
    auth_mode: str
    input_validator: Any  # a jsonschema validator, or None

    def validate_input(self, value: Any) -> str | None:
        """The first violation of the endpoint's input_schema, or None."""
        if self.input_validator is None:
            return None
        error = jsonschema.exceptions.best_match(self.input_validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"input{'/' + where if where else ''}: {error.message}"


class EndpointCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], nc: Client, ttl_s: float):
        self.sessions = sessions
        self.nc = nc
        self.ttl_s = ttl_s
        self._by_slug: dict[str, tuple[RunnableEndpoint, float]] = {}
        self._loading: dict[str, asyncio.Task[RunnableEndpoint]] = {}
        self._generation = 0  # bumped by every forget: a lookup that straddles one caches nothing

    def forget(self, endpoint_id: str | None = None, workspace_id: str | None = None) -> None:
        self._generation += 1
        for slug, (entry, _) in list(self._by_slug.items()):
            snap = entry.snapshot
            if snap.id == endpoint_id or snap.workspace_id == workspace_id:
                self._by_slug.pop(slug, None)

    async def announce(self, *, endpoint_id: str | None = None, workspace_id: str | None = None) -> None:
        """Call after the change is committed."""
        self.forget(endpoint_id, workspace_id)
        changed = CatalogChanged(endpoint_id=endpoint_id, workspace_id=workspace_id)
        await self.nc.publish(subjects.CATALOG_CHANGED, changed.model_dump_json().encode())

    async def by_slug(self, slug: str) -> RunnableEndpoint:
        hit = self._by_slug.get(slug)
        if hit is not None and hit[1] > time.monotonic():
            ENDPOINT_LOOKUPS.labels("hit").inc()
            return hit[0]
        ENDPOINT_LOOKUPS.labels("miss").inc()
        # One lookup per slug at a time: when an entry expires under load, the requests that find it gone
        # share one query instead of each sending its own.
        loading = self._loading.get(slug)
        if loading is None:
            loading = self._loading[slug] = asyncio.create_task(self._load(slug, self._generation))
            loading.add_done_callback(lambda task: self._loaded(slug, task))
        return await asyncio.shield(loading)

    def _loaded(self, slug: str, task: asyncio.Task[RunnableEndpoint]) -> None:
        self._loading.pop(slug, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, so a lookup every caller left is not reported as lost

    async def _load(self, slug: str, generation: int) -> RunnableEndpoint:
        async with self.sessions() as session:
            repo = CatalogRepository(session)
            ep = await repo.endpoint_by_slug(slug)
            if ep is None:
                raise NotFound(f"no endpoint {slug!r}", code="endpoint_not_found")
            servers = await repo.servers(ep.workspace_id)
        validator = None
        if ep.input_schema is not None:
            validator = jsonschema.validators.validator_for(ep.input_schema)(ep.input_schema)
        entry = RunnableEndpoint(endpoint_snapshot(ep, servers), ep.status, ep.auth_mode, validator)
        if self.ttl_s > 0 and generation == self._generation:
            if len(self._by_slug) > 50_000:
                self._by_slug.clear()
            self._by_slug[slug] = (entry, time.monotonic() + self.ttl_s)
        return entry
