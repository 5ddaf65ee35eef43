"""A run's tools: the workspace's MCP servers (streamable HTTP), listed in parallel, named `<slug>__<tool>`.

A server's tool definitions come from the process's `ToolCache` when it was listed recently; then no session is
opened unless the model calls one of its tools. Otherwise it is listed now, and that session serves the run's
calls. Sessions are never shared between runs (a handshake-era server keeps per-session state, and a run must
not see another's); the HTTP connection pool is (`HttpClients.mcp`), and every connection passes the SSRF guard.

Each server's MCP session lives in a task of its own, because the SDK's task groups must be entered and
left by the same task; the agent calls tools on the open sessions from its own task. A server that cannot
be reached (or is refused by the SSRF guard) contributes no tools, and a call to one of its tools gets that
reason back as an error result: tool failures are told to the model, they never fail the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agentry_common.events import McpServerRef, ToolCall
from agentry_common.netguard import UrlNotAllowed

from .providers import ToolSpec
from .tool_cache import Key, Listing, ToolCache, cache_key

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
MAX_NAME = 64  # the strictest provider limit (OpenAI function names)
MAX_PAGES = 20


def exposed_name(slug: str, tool: str) -> str:
    """`<slug>__<tool>` in the characters and length every provider accepts, stable for a given pair."""
    name = _UNSAFE.sub("_", f"{slug}__{tool}")
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def describe(err: BaseException) -> str:
    """A safe one-line reason: never the exception text of transport errors (URLs may carry credentials)."""
    if isinstance(err, BaseExceptionGroup):
        return describe(err.exceptions[0])
    if isinstance(err, UrlNotAllowed):
        return f"tool server not allowed: {err.message}"
    if isinstance(err, MCPError):
        return f"tool server error: {err}"[:300]
    if isinstance(err, TimeoutError | httpx2.TimeoutException):
        return "tool server timed out"
    if isinstance(err, httpx2.HTTPStatusError):
        return f"tool server answered HTTP {err.response.status_code}"
    return f"tool server unavailable ({type(err).__name__})"


def tool_result(result: mcp_types.CallToolResult) -> tuple[Any, str | None]:
    """(result, error) as the run records it and the model reads it."""
    parts = [c.text if isinstance(c, mcp_types.TextContent) else f"[{c.type}]" for c in result.content]
    text = "\n".join(parts)
    if result.is_error:
        return None, text or "the tool failed"
    if result.structured_content is not None:
        return result.structured_content, None
    return text, None


@dataclass
class _Server:
    ref: McpServerRef
    headers: dict[str, str] = field(default_factory=dict)
    key: Key | None = None
    client: Client | None = None
    opening: asyncio.Future[None] | None = None  # done once the session is open (or failed to)
    error: str | None = None
    tools: dict[str, str] = field(default_factory=dict)  # exposed name → MCP tool name
    specs: list[ToolSpec] = field(default_factory=list)


class Toolbox:
    """One run's tools. With a `cache`, a server listed recently is not contacted at all until the model calls
    one of its tools; only then is its session opened (once, however many calls the model makes at once)."""

    def __init__(self, transport: httpx2.AsyncBaseTransport, *, tool_timeout_s: float, cache: ToolCache | None = None):
        self.transport = transport
        self.tool_timeout_s = tool_timeout_s
        self.cache = cache
        self.specs: list[ToolSpec] = []
        self._servers: dict[str, _Server] = {}
        self._by_tool: dict[str, _Server] = {}
        self._closing = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], asyncio.Future[None]] = {}

    async def open(
        self,
        servers: list[McpServerRef],
        headers: dict[str, dict[str, str] | str],
        *,
        owner_id: str = "",
        workspace_id: str | None = None,
        fresh: bool = False,
    ) -> None:
        """Every server's tools: from the cache, or listed (all in parallel, each session then kept for the run).
        `headers[slug]` is a dict or an error; `fresh` lists every server again (and caches what it got)."""
        waits: list[asyncio.Future[None]] = []
        for ref in servers:
            server = self._servers[ref.slug] = _Server(ref)
            given = headers.get(ref.slug, {})
            if isinstance(given, str):
                server.error = given
                continue
            server.headers = given
            if self.cache is not None:
                server.key = cache_key(owner_id, ref, given)
                listing = None if fresh else self.cache.get(server.key)
                if listing is not None:
                    server.tools, server.specs = listing.tools, list(listing.specs)
                    continue
                pending = None if fresh else self.cache.pending(server.key)
                if pending is not None:
                    waits.append(asyncio.ensure_future(self._follow(server, pending, workspace_id)))
                    continue
                claim = self.cache.listing(server.key)
                waits.append(self._connect(server, listing=True, workspace_id=workspace_id, claim=claim))
                continue
            waits.append(self._connect(server, listing=True, workspace_id=workspace_id))
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        # In the endpoint's server order whatever order they answered in: the same run sends the same request.
        for server in self._servers.values():
            for spec in server.specs:
                if spec.name not in self._by_tool:  # a colliding name would make calls ambiguous: first wins
                    self._by_tool[spec.name] = server
                    self.specs.append(spec)

    async def _follow(self, server: _Server, pending: asyncio.Future[Listing | None], workspace_id: str | None) -> None:
        """Another run is listing this server right now: take its answer, or list it ourselves if it failed."""
        listing = await asyncio.shield(pending)
        if listing is not None:
            server.tools, server.specs = listing.tools, list(listing.specs)
        else:
            await self._connect(server, listing=True, workspace_id=workspace_id)

    def _connect(
        self,
        server: _Server,
        *,
        listing: bool,
        workspace_id: str | None = None,
        claim: asyncio.Future[Listing | None] | None = None,
    ) -> asyncio.Future[None]:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        server.opening = ready
        task = asyncio.create_task(self._hold(server, ready, listing, workspace_id), name=f"mcp:{server.ref.slug}")
        self._tasks[task] = ready
        if claim is not None and self.cache is not None and server.key is not None:
            # However the task ends (even cancelled before it ran), runs waiting for this listing are released.
            cache, key = self.cache, server.key
            task.add_done_callback(lambda _: cache.abandoned(key, claim))
        return ready

    async def _hold(
        self, server: _Server, ready: asyncio.Future[None], listing: bool, workspace_id: str | None
    ) -> None:
        """Open the session (and list tools), keep it until the run ends, then close it in this task."""
        try:
            http = httpx2.AsyncClient(
                transport=self.transport,
                headers=server.headers,
                timeout=httpx2.Timeout(30.0, read=self.tool_timeout_s),
            )
            transport = streamable_http_client(server.ref.url, http_client=http)
            # Always the handshake (`server/discover`, or `initialize` for a handshake-era server), even when the
            # protocol is known from the listing: adopting it would send nothing until the call, and an unreachable
            # or refused server would then be reported as "Connection closed" instead of why.
            async with Client(transport, cache=None, read_timeout_seconds=self.tool_timeout_s) as client:
                if listing:
                    await self._list(server, client)
                    self._remember(server, workspace_id)
                server.client = client
                ready.set_result(None)
                await self._closing.wait()
        except BaseException as err:  # any failure, cancellation included, leaves the server without a session
            if not ready.done():
                server.error = describe(err)
                log.warning("MCP server %s unavailable: %s", server.ref.slug, server.error)
                if self.cache is not None and server.key is not None:
                    self.cache.forget(server.key)  # the next run lists it again, as if never cached
                ready.set_result(None)
            if isinstance(err, asyncio.CancelledError):
                raise

    def _remember(self, server: _Server, workspace_id: str | None) -> None:
        if self.cache is not None and server.key is not None:
            self.cache.listed(server.key, Listing(dict(server.tools), tuple(server.specs), workspace_id))

    async def _list(self, server: _Server, client: Client) -> None:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                name = exposed_name(server.ref.slug, tool.name)
                if name not in server.tools:
                    server.tools[name] = tool.name
                    description = tool.description or tool.title or tool.name
                    server.specs.append(ToolSpec(name, description, dict(tool.input_schema)))
            cursor = page.next_cursor
            if cursor is None:
                return

    def offered(self, slug: str) -> tuple[str | None, list[tuple[str, ToolSpec]]]:
        """One opened server's (error, [(its tool name, the spec the model gets)])."""
        server = self._servers[slug]
        return server.error, [(server.tools[spec.name], spec) for spec in server.specs]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        """Call a tool by its exposed name; every failure becomes the call's `error`, never an exception."""
        started = time.perf_counter()
        result: Any = None
        error: str | None = None
        server = self._by_tool.get(name)
        if server is None:
            slug = name.split("__", 1)[0]
            known = self._servers.get(slug)
            error = known.error if known and known.error else f"unknown tool {name!r}"
        elif server.error is not None:
            error = server.error
        else:
            try:
                async with asyncio.timeout(self.tool_timeout_s):
                    client = server.client or await self._open_now(server)
                    if client is None:
                        error = server.error
                    else:
                        result, error = tool_result(await client.call_tool(server.tools[name], arguments))
            except TimeoutError:
                error = f"the tool did not answer within {self.tool_timeout_s:g} s"
            except Exception as err:
                error = describe(err)
        latency = int((time.perf_counter() - started) * 1000)
        return ToolCall(name=name, arguments=arguments, result=result, error=error, latency_ms=latency)

    async def _open_now(self, server: _Server) -> Client | None:
        """The server's session, opened on the first call of one of its tools (parallel calls share it)."""
        if server.opening is None:
            self._connect(server, listing=False)
        assert server.opening is not None
        await asyncio.shield(server.opening)  # a call that gives up does not abandon the others' session
        return server.client

    def close(self) -> None:
        """End every session in the background: a run's answer does not wait for MCP session teardown."""
        self._closing.set()
        for task, ready in self._tasks.items():
            if not ready.done():  # still connecting when the run ended (deadline): no one will use it
                task.cancel()
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()
