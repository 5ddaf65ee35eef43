"""No account can read a decrypted secret off the bus.

The keys service answers the runner's `secrets.resolve` with the secret in clear (a BYO LLM key, an MCP
server's headers). Each NATS user reads its own inboxes only (`_INBOX_<user>.>`, bus_permissions), so while
real runs resolve both kinds of secret, every other account — gateway, billing, keys, the webhook forwarder —
listening on every inbox and wildcard it can try captures none of them. The admin user, listening on `>` at
the same time, shows that the secrets did cross the bus while the others listened.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from mcp.server.mcpserver import MCPServer
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentry_common.bus_permissions import WEBHOOK_FORWARDER
from agentry_common.stack import Stack
from agentry_common.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")

OTHER_ACCOUNTS = ("gateway", "billing", "keys", WEBHOOK_FORWARDER)
# Everything a curious account might subscribe to: the default inboxes, the runner's, everything. (A
# partial-token wildcard such as `_INBOX_*.>` is not a wildcard in NATS; nats-py refuses it as a subject.)
WILDCARDS = ("_INBOX.>", "_INBOX_runner.>", "*.>", ">")


class Sniffer:
    """One account's connection, subscribed to every wildcard it can: what it captured, what it was refused."""

    def __init__(self) -> None:
        self.captured: list[bytes] = []
        self.errors: list[Exception] = []
        self.client: Client | None = None

    async def start(self, url: str, user: str | None = None, password: str | None = None) -> Sniffer:
        async def on_error(err: Exception) -> None:
            self.errors.append(err)

        async def on_msg(msg: Msg) -> None:
            headers = "".join(f"{k}: {v}\n" for k, v in (msg.headers or {}).items())
            self.captured.append(msg.subject.encode() + b" " + headers.encode() + msg.data)

        self.client = await nats.connect(url, user=user, password=password, error_cb=on_error)
        for subject in WILDCARDS:
            await self.client.subscribe(subject, cb=on_msg)
        await self.client.flush()
        return self

    def saw(self, secret: str) -> bool:
        return any(secret.encode() in data for data in self.captured)


@pytest.fixture
async def header_checking_tool_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A real MCP server on loopback that records the Authorization header of every request it gets."""
    mcp = MCPServer("calc")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    app = mcp.streamable_http_app()
    seen: list[str] = []

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        await app(scope, receive, send)

    url, stop = await serve_asgi(recording)
    try:
        yield f"{url}/mcp", seen
    finally:
        await stop()


async def test_no_other_account_reads_a_resolved_secret_off_the_bus(
    stack: Stack,
    http: httpx.AsyncClient,
    auth: dict[str, str],
    header_checking_tool_server: tuple[str, list[str]],
) -> None:
    assert stack.nats is not None and stack.nats.secure, "the test stack runs NATS with per-account users"
    url, seen_headers = header_checking_tool_server
    llm_key = f"sk-test-secret-llm-{uuid.uuid4().hex}"
    mcp_token = f"sk-test-secret-mcp-{uuid.uuid4().hex}"
    ws = (await http.post("/api/workspaces", json={"name": "sniffed"}, headers=auth)).json()["workspace"]["id"]
    server = {"name": "calc", "url": url, "headers": {"Authorization": f"Bearer {mcp_token}"}}
    r = await http.post(f"/api/workspaces/{ws}/servers", json=server, headers=auth)
    assert r.status_code == 201, r.text
    body = {"name": "sniffed", "workspace_id": ws, "system_prompt": "p", "llm_provider": "mock", "llm_api_key": llm_key}
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()

    sniffers: dict[str, Sniffer] = {}
    for account in OTHER_ACCOUNTS:
        user = stack.nats.user(account)
        assert user is not None
        sniffers[account] = await Sniffer().start(stack.nats.bare_url, *user)
    admin = await Sniffer().start(stack.nats.url)  # operators see everything: the control
    try:
        run_input = {"mock": {"tool": "calc__add", "arguments": {"a": 2, "b": 3}}}
        key = {"X-API-Key": created["api_key"]}
        for _ in range(2):
            r = await http.post(created["run_url"], json={"input": run_input}, headers=key)
            assert r.status_code == 200, r.text
        assert f"Bearer {mcp_token}" in seen_headers, "the run resolved the MCP headers and sent them"
        for sniffer in (*sniffers.values(), admin):
            assert sniffer.client is not None
            await sniffer.client.flush()
        await asyncio.sleep(0.3)  # what was in flight to the sniffers has arrived
    finally:
        for sniffer in (*sniffers.values(), admin):
            if sniffer.client is not None:
                await sniffer.client.close()

    assert admin.saw(llm_key) and admin.saw(mcp_token), "the secrets crossed the bus while the others listened"
    leaks = {account: [s for s in (llm_key, mcp_token) if sniffer.saw(s)] for account, sniffer in sniffers.items()}
    assert leaks == {account: [] for account in OTHER_ACCOUNTS}
    for account, sniffer in sniffers.items():
        # refused outright, not merely quiet: the server told each account it may not listen there
        refused = " ".join(str(e).lower() for e in sniffer.errors)
        assert 'permissions violation for subscription to ">"' in refused, (account, sniffer.errors)
        assert "_inbox_runner.>" in refused, (account, sniffer.errors)
