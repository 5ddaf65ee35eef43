"""No account can read a decrypted secret off the bus.

The keys service answers the runner's `secrets.resolve` with a decrypted secret (a BYO LLM key, an MCP
server's headers). Each NATS user reads its own inboxes only (`_INBOX_<user>.>`, bus_permissions), so while
real runs resolve both kinds of secret, every other account — gateway, billing, keys, the webhook forwarder —
listening on every inbox and wildcard it can try captures none of them. And the runner has the value sealed
to a key of its own (`agentry_common.sealed`): an account that captures the runner's inbox in a JetStream
stream of its own (its `$JS.API` grant allows that), or an operator listening on `>`, gets ciphertext.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import orjson
import pytest
from mcp.server.mcpserver import MCPServer
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentry_dev.bus_permissions import WEBHOOK_FORWARDER
from agentry_dev.stack import Stack
from agentry_dev.testing import serve_asgi

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
    admin = await Sniffer().start(stack.nats.url)  # operators see every message: the control
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

    resolved = [m for m in admin.captured if m.startswith(b"_INBOX_runner.") and b'"sealed":"' in m]
    # each of the two secrets was resolved at least once (runners keep them in memory after that)
    assert len(resolved) >= 2, "the secrets crossed the bus (sealed) while the others listened"
    assert not admin.saw(llm_key) and not admin.saw(mcp_token), "not even an operator reads them in clear"
    leaks = {account: [s for s in (llm_key, mcp_token) if sniffer.saw(s)] for account, sniffer in sniffers.items()}
    assert leaks == {account: [] for account in OTHER_ACCOUNTS}
    for account, sniffer in sniffers.items():
        # refused outright, not merely quiet: the server told each account it may not listen there
        refused = " ".join(str(e).lower() for e in sniffer.errors)
        assert 'permissions violation for subscription to ">"' in refused, (account, sniffer.errors)
        assert "_inbox_runner.>" in refused, (account, sniffer.errors)


async def test_a_stream_capturing_the_runners_inbox_gets_only_sealed_secrets(stack: Stack, user: str) -> None:
    """`$JS.API.>` lets an account create a stream on any subject, the runner's inbox included; a resolved
    secret must be unreadable there too. (The test's runner connection uses an inbox prefix under the runner's
    own, so the capture does not touch the runner service's traffic.)"""
    from nats.js.api import StreamConfig

    from agentry_common import subjects
    from agentry_common.errors import BadRequest
    from agentry_common.requests import ResolvedSecret, ResolveSecret, StoredSecret, StoreSecret
    from agentry_common.rpc import call
    from agentry_common.sealed import ReplyKey

    assert stack.nats is not None
    gw_user, runner_user = stack.nats.user("gateway"), stack.nats.user("runner")
    assert gw_user is not None and runner_user is not None
    url = stack.nats.bare_url
    gateway = await nats.connect(url, user=gw_user[0], password=gw_user[1], inbox_prefix="_INBOX_gateway")
    runner = await nats.connect(url, user=runner_user[0], password=runner_user[1], inbox_prefix="_INBOX_runner.t")
    js = gateway.jetstream()
    stream = f"CAPTURE_{uuid.uuid4().hex[:8]}"
    value = f"sk-test-secret-captured-{uuid.uuid4().hex}"
    try:
        stored = await call(gateway, subjects.SECRETS_STORE, StoreSecret(owner_id=user, value=value), StoredSecret)
        await js.add_stream(StreamConfig(name=stream, subjects=["_INBOX_runner.t.>"]))  # the gateway may do this

        key = ReplyKey()
        ask = ResolveSecret(secret_id=stored.secret_id, owner_id=user, reply_key=key.public)
        reply = await call(runner, subjects.SECRETS_RESOLVE, ask, ResolvedSecret)
        assert key.open(reply.sealed, stored.secret_id) == value
        with pytest.raises(BadRequest) as bad:  # a key that is not one is refused, not answered in clear
            await call(runner, subjects.SECRETS_RESOLVE, ask.model_copy(update={"reply_key": "x"}), ResolvedSecret)
        assert bad.value.code == "bad_reply_key"
        captured = await _messages(js, stream)
        assert captured and not [m for m in captured if value.encode() in m], "a sealed reply, unreadable"

        # a request without a reply key is refused: the keys service never answers a secret in clear
        clear = orjson.dumps({"secret_id": stored.secret_id, "owner_id": user})
        with contextlib.suppress(nats.errors.TimeoutError):  # FastStream may refuse it without an answer
            refused = await runner.request(subjects.SECRETS_RESOLVE, clear, timeout=2)
            assert value.encode() not in refused.data
        assert not [m for m in await _messages(js, stream) if value.encode() in m]
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await gateway.close()
        await runner.close()


async def _messages(js: Any, stream: str) -> list[bytes]:
    info = await js.stream_info(stream)
    return [(await js.get_msg(stream, seq)).data or b"" for seq in range(info.state.first_seq, info.state.last_seq + 1)]
