"""What each MCP server offered when last listed, kept in the runner process for a short time.

Most runs make one LLM call and no tool call, yet each needs its servers' tool definitions for that call:
listing them (a session handshake and `tools/list` per server) cost more CPU than the rest of the run. So a
listing is kept for `mcp_tools_cache_ttl_s` and the run opens a session only when its model calls a tool.

An entry is keyed by everything a listing depends on: the owner, the server's slug (its tools' exposed names),
its URL, its headers secret id and a digest of the headers' resolved values. A changed server, a rotated header
secret or another owner is therefore a new key at once, whatever the TTL; `catalog.changed` for a workspace drops
that workspace's entries too (a backstop: the TTL bounds how long a server's own change of its tools takes).
A failed listing is never kept: a server that is down is tried again by the next run, as without the cache.
Runs that miss the same entry together share one listing (`pending`); should it fail, each lists on its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from pydantic import ValidationError

from agentry_common import asyncapi, subjects
from agentry_common.events import CatalogChanged, McpServerRef

from .providers import ToolSpec

log = logging.getLogger(__name__)
Key = tuple[str, str, str, str, str]

asyncapi.consumes(
    subjects.CATALOG_CHANGED, CatalogChanged, by="runner",
    description="A workspace's MCP servers changed: every runner replica drops the tool lists it keeps of them.",
)  # fmt: skip


def cache_key(owner_id: str, server: McpServerRef, headers: dict[str, str]) -> Key:
    """The listing's identity; the header values enter only as a digest (the key may be seen in a debugger)."""
    digest = hashlib.sha256(orjson.dumps(headers, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return owner_id, server.slug, server.url, server.headers_secret_id or "", digest


@dataclass(frozen=True)
class Listing:
    tools: dict[str, str]  # exposed name → MCP tool name
    specs: tuple[ToolSpec, ...]
    workspace_id: str | None = None


class ToolCache:
    """Bounded (least recently used leaves first), TTL'd, process-wide; `ttl_s == 0` keeps nothing."""

    def __init__(self, ttl_s: float, max_entries: int):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, tuple[float, Listing]] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[Listing | None]] = {}

    def get(self, key: Key) -> Listing | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, listing = found
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return listing

    def put(self, key: Key, listing: Listing) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic() + self.ttl_s, listing)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pending(self, key: Key) -> asyncio.Future[Listing | None] | None:
        """The listing another run is making of this entry right now, if any (`None` result: it failed)."""
        return self._pending.get(key)

    def listing(self, key: Key) -> asyncio.Future[Listing | None] | None:
        """This run lists the entry now: runs missing it meanwhile wait for its `listed` (with the cache on)."""
        if self.ttl_s <= 0 or key in self._pending:
            return None
        claim = self._pending[key] = asyncio.get_running_loop().create_future()
        return claim

    def listed(self, key: Key, listing: Listing) -> None:
        """What the listing gave, kept and handed to the runs that waited for it."""
        self.put(key, listing)
        waiting = self._pending.pop(key, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(listing)

    def abandoned(self, key: Key, claim: asyncio.Future[Listing | None]) -> None:
        """The listing of `claim` ended (failed, cancelled or done): whoever still waits lists on their own."""
        if self._pending.get(key) is claim:
            del self._pending[key]
        if not claim.done():
            claim.set_result(None)

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def forget_workspace(self, workspace_id: str) -> None:
        for key in [k for k, (_, listing) in self._entries.items() if listing.workspace_id == workspace_id]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self, nc: Nats) -> None:
        await nc.subscribe(subjects.CATALOG_CHANGED, cb=self._on_changed)

    async def _on_changed(self, msg: Msg) -> None:
        try:
            changed = CatalogChanged.model_validate_json(msg.data)
        except ValidationError:
            log.error("dropping a catalog.changed that is not a CatalogChanged")
            return
        if changed.workspace_id:  # a workspace's MCP servers changed; an endpoint's own change lists nothing
            self.forget_workspace(changed.workspace_id)
