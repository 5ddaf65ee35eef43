"""MCP tool definitions are kept for a while and sessions open only when a tool is called: runs that call no
tool cost their servers nothing after the first, a tool call still works, and a changed server, header value or
workspace catalog is listed again at once. Counted at a real MCP server (streamable HTTP) on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import orjson
import pytest
from mcp.server.mcpserver import MCPServer

from agentry_common import subjects
from agentry_common.events import CatalogChanged, McpServerRef
from agentry_common.netguard import guard_transport
from agentry_dev.testing import serve_asgi
from agentry_runner.tool_cache import ToolCache
from agentry_runner.tools import Toolbox

RUNS = 5


@dataclass
class Counting:
    """A real MCP server that counts the JSON-RPC methods it is sent, and the header values they came with."""

    url: str
    methods: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (method, its X-Token header)

    def tokens(self, method: str) -> list[str | None]:
        return [token for name, token in self.requests if name == method]

    @property
    def handshakes(self) -> int:
        return self.methods["initialize"] + self.methods["server/discover"]


@pytest.fixture
async def counting() -> AsyncIterator[Counting]:
    server = MCPServer("clock")

    @server.tool()
    def now(zone: str) -> str:
        """The time in a zone."""
        return f"12:00 in {zone}"

    app = server.streamable_http_app()
    seen = Counting("")

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        messages, body = [], b""
        while True:  # read the body to learn its method, then hand the same messages on
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if body:
            method = orjson.loads(body).get("method", "(reply)")
            seen.methods[method] += 1
            seen.requests.append((method, dict(scope["headers"]).get(b"x-token", b"").decode() or None))
        replay = iter(messages)

        async def replayed() -> Any:
            return next(replay, None) or await receive()

        await app(scope, replayed, send)

    url, stop = await serve_asgi(recording)
    seen.url = f"{url}/mcp"
    yield seen
    await stop()


def transport() -> httpx2.AsyncBaseTransport:
    return guard_transport(httpx2.AsyncHTTPTransport(trust_env=False), allow_private=True)


async def test_runs_without_tool_calls_list_a_server_once_and_a_tool_call_still_works(service, probe, counting):
    endpoint = probe.endpoint(servers=[probe.weather(slug="clock", url=counting.url)])
    for _ in range(RUNS):
        ended = await service.execute(probe.event(endpoint, "what time is it?"), 1)
        assert ended.status == "succeeded" and ended.tool_calls == []
    assert counting.methods["tools/list"] == 1 and counting.handshakes == 1

    asked = {"mock": {"tool": "clock__now", "arguments": {"zone": "UTC"}}}
    ended = await service.execute(probe.event(endpoint, asked), 1)
    [call] = ended.tool_calls
    assert ended.status == "succeeded" and call["result"] == {"result": "12:00 in UTC"} and call["error"] is None
    # Only the run that calls a tool opens a session: its handshake, the call (and the SDK's own re-listing, with
    # which it checks a result against the tool's output schema).
    assert counting.methods["tools/call"] == 1 and counting.handshakes == 2


async def test_a_server_under_a_new_url_is_listed_at_once(service, probe, counting):
    first = probe.endpoint(servers=[probe.weather(slug="clock", url=counting.url)])
    await service.execute(probe.event(first, "hi"), 1)
    moved = counting.url.replace("127.0.0.1", "localhost")
    second = probe.endpoint(owner_id=first.owner_id, servers=[probe.weather(slug="clock", url=moved)])
    await service.execute(probe.event(second, "hi"), 1)
    assert counting.methods["tools/list"] == 2


async def test_a_changed_header_value_is_a_new_listing_and_each_call_carries_its_own(counting):
    cache = ToolCache(ttl_s=60, max_entries=10)
    ref = McpServerRef(slug="clock", url=counting.url, headers_secret_id="sec_1")
    for token in ("old", "old", "new"):
        box = Toolbox(transport(), tool_timeout_s=5, cache=cache)
        await box.open([ref], {"clock": {"X-Token": token}}, owner_id="user-1")
        call = await box.call("clock__now", {"zone": "CET"})
        box.close()
        assert call.error is None and call.result == {"result": "12:00 in CET"}
    # Listed with "old", then served from memory, then the new value is a new entry: listed again at once,
    # whatever the TTL. (The second run's tools/list is the SDK's check of its call's result, after the call.)
    assert counting.tokens("tools/list") == ["old", "old", "new"]
    assert counting.tokens("tools/call") == ["old", "old", "new"]
    assert [m for m, _ in counting.requests if m in ("tools/list", "tools/call")][:5] == [
        "tools/list",
        "tools/call",
        "tools/call",
        "tools/list",
        "tools/list",
    ]


async def test_a_server_that_went_down_is_a_tool_error_and_is_listed_again_next_run(counting):
    cache = ToolCache(ttl_s=60, max_entries=10)
    ref = McpServerRef(slug="clock", url=counting.url)
    box = Toolbox(transport(), tool_timeout_s=5, cache=cache)
    await box.open([ref], {})
    box.close()
    assert len(cache) == 1

    # The same server refused by the SSRF guard stands in for one that went down since it was listed.
    refused = Toolbox(guard_transport(httpx2.AsyncHTTPTransport(), allow_private=False), tool_timeout_s=5, cache=cache)
    await refused.open([ref], {})
    call = await refused.call("clock__now", {"zone": "UTC"})
    refused.close()
    assert call.error is not None and call.error.startswith("tool server not allowed")
    assert len(cache) == 0  # not offered again from memory: the next run asks the server, as without the cache


async def test_a_ttl_of_zero_lists_every_run_and_a_catalog_change_drops_the_workspace(service, probe, rnc, counting):
    off = ToolCache(ttl_s=0, max_entries=10)
    for _ in range(2):
        box = Toolbox(transport(), tool_timeout_s=5, cache=off)
        await box.open([McpServerRef(slug="clock", url=counting.url)], {})
        box.close()
    assert counting.methods["tools/list"] == 2 and len(off) == 0

    await service.tool_cache.start(rnc)
    endpoint = probe.endpoint(workspace_id="ws_changing", servers=[probe.weather(slug="clock", url=counting.url)])
    await service.execute(probe.event(endpoint, "hi"), 1)
    assert counting.methods["tools/list"] == 3
    await rnc.publish(subjects.CATALOG_CHANGED, CatalogChanged(workspace_id="ws_other").model_dump_json().encode())
    await rnc.publish(subjects.CATALOG_CHANGED, CatalogChanged(workspace_id="ws_changing").model_dump_json().encode())
    await rnc.flush()
    for _ in range(1000):
        if not len(service.tool_cache):
            break
        await asyncio.sleep(0.01)
    await service.execute(probe.event(endpoint, "hi"), 1)
    assert counting.methods["tools/list"] == 4


async def test_runs_that_miss_the_same_entry_together_share_one_listing(counting):
    cache = ToolCache(ttl_s=60, max_entries=10)
    ref = McpServerRef(slug="clock", url=counting.url)
    boxes = [Toolbox(transport(), tool_timeout_s=5, cache=cache) for _ in range(RUNS)]
    await asyncio.gather(*(box.open([ref], {}) for box in boxes))
    assert counting.methods["tools/list"] == 1 and counting.handshakes == 1
    calls = await asyncio.gather(*(box.call("clock__now", {"zone": "UTC"}) for box in boxes))
    for box in boxes:
        box.close()
    assert all(box.specs and box.specs[0].name == "clock__now" for box in boxes)
    assert all(call.error is None for call in calls)
    assert counting.handshakes == RUNS  # the listing run's session, and one per other run that calls a tool
    assert counting.methods["tools/call"] == RUNS


async def test_runs_waiting_for_a_listing_that_fails_list_on_their_own(counting):
    cache = ToolCache(ttl_s=60, max_entries=10)
    ref = McpServerRef(slug="clock", url=counting.url)
    # The first run's listing is refused by its SSRF guard; the runs that waited for it then list themselves.
    refused = Toolbox(guard_transport(httpx2.AsyncHTTPTransport(), allow_private=False), tool_timeout_s=5, cache=cache)
    others = [Toolbox(transport(), tool_timeout_s=5, cache=cache) for _ in range(2)]
    await asyncio.gather(refused.open([ref], {}), *(box.open([ref], {}) for box in others))
    for box in (refused, *others):
        box.close()
    assert refused.specs == [] and all(box.specs for box in others)
    assert counting.methods["tools/list"] == 2
