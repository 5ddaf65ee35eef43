"""The end-to-end bench's two ends of the wire: the fake upstream (its own process) and the load generator's
client. Both are raw asyncio + httptools so that they cost the shared cores as little as possible.

The upstream answers, on one port:
- `POST /v1/chat/completions`: a fixed OpenAI chat completion with usage; it counts calls by the bearer key
  it was sent (so the bench can check that BYO-key runs sent the owner's key and the others the platform's);
- `POST /mcp`: a stateless MCP server (streamable HTTP, JSON responses, protocol 2026-07-28) with one tool:
  `server/discover` and `tools/list`, built from the `mcp_types` models; it counts calls by the value of the
  `X-Bench-Token` header (the MCP server's secret headers, which the runner resolves);
- `GET /stats`: those counters.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httptools
import httpx
import mcp_types
import orjson
import uvloop

MODEL = "bench-model"
MCP_TOKEN_HEADER = b"x-bench-token"
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "30"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 2, "total_tokens": 44},
    }
)
_DISCOVER = mcp_types.DiscoverResult(
    supported_versions=["2026-07-28"],
    capabilities=mcp_types.ServerCapabilities(tools=mcp_types.ToolsCapability()),
).model_dump(mode="json", by_alias=True, exclude_none=True)
_TOOLS = mcp_types.ListToolsResult(
    tools=[
        mcp_types.Tool(
            name="lookup",
            description="Look an invoice up by number.",
            input_schema={"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]},
        )
    ]
).model_dump(mode="json", by_alias=True, exclude_none=True)
_MCP_RESULTS = {"server/discover": _DISCOVER, "tools/list": _TOOLS}


class Upstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive; see the module's docstring for what it answers."""

    llm_keys: Counter[str] = Counter()
    mcp_tokens: Counter[str] = Counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self.url, self.body, self.header = b"", b"", b""
        self.auth, self.token = "", ""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"authorization":
            self.auth = value.decode().removeprefix("Bearer ")
        elif name == MCP_TOKEN_HEADER:
            self.token = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method, url, body = self.parser.get_method(), self.url, self.body
        status, payload = b"200 OK", b""
        if method == b"POST" and url.endswith(b"/chat/completions"):
            Upstream.llm_keys[self.auth or "(none)"] += 1
            payload = COMPLETION
        elif method == b"POST" and url == b"/mcp":
            Upstream.mcp_tokens[self.token or "(none)"] += 1
            status, payload = self._mcp(body)
        elif url == b"/stats":
            payload = orjson.dumps({"llm_keys": Upstream.llm_keys, "mcp_tokens": Upstream.mcp_tokens})
        elif url == b"/mcp":  # GET (no server-initiated stream) or DELETE (stateless: no session)
            status, payload = b"405 Method Not Allowed", b""
        else:
            status, payload = b"404 Not Found", b'{"error": {"message": "not found"}}'
        self._reset()
        head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (status, len(payload))
        self.transport.write(head + payload)
        if not self.parser.should_keep_alive():
            self.transport.close()

    @staticmethod
    def _mcp(body: bytes) -> tuple[bytes, bytes]:
        message: dict[str, Any] = orjson.loads(body)
        if "id" not in message:  # a notification
            return b"202 Accepted", b""
        result = _MCP_RESULTS.get(message.get("method", ""))
        if result is None:
            error = {"code": -32601, "message": "method not found"}
            return b"200 OK", orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error})
        return b"200 OK", orjson.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    """The upstream in a process of its own (it inherits this thread's CPU affinity)."""
    proc = subprocess.Popen([sys.executable, __file__, str(port)], start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError("the fake upstream did not start")


def upstream_stats(port: int) -> dict[str, dict[str, int]]:
    return dict(httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json())


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the load generator, one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, port: int) -> Connection:
        _, conn = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("connection closed"))
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.waiter is not None
        self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    async def post(self, path: str, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionResetError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        head = b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        self.transport.write(head % (path.encode(), len(body), headers) + body)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1])))
