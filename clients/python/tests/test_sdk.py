"""The SDK against the whole stack, sync and async: management, caller keys, webhooks, runs (plain, streamed,
async-polled), the wallet, and typed errors carrying the API's code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer

from agentry import (
    AgentryError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    UnprocessableError,
)
from agentry.models import Deposited, Key, RunResult
from agentry_dev.stack import dev_token
from agentry_dev.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")


def test_the_sync_client_manages_runs_streams_and_pays(gateway_url: str, user: str) -> None:
    with Client(gateway_url, token=dev_token(user)) as agentry:
        deposited = agentry.deposit(500)
        assert isinstance(deposited, Deposited) and deposited.balance_cents == 500  # manual mode credits at once
        assert agentry.balance().lifetime_deposited_cents == 500
        assert agentry.transactions().transactions[0].kind == "deposit"
        ws = agentry.create_workspace("Acme")
        assert [w.id for w in agentry.list_workspaces()] == [ws.id]
        created = agentry.create_endpoint(
            ws.id, "Parser", "Parse invoices.", llm_provider="mock", enable_streaming=True, price_per_run_cents=3
        )
        endpoint = created.endpoint
        assert created.api_key.startswith("aek_") and endpoint.enable_streaming
        assert agentry.get_endpoint(endpoint.id).slug == endpoint.slug

        events = list(agentry.stream(endpoint.slug, "Invoice #42", api_key=created.api_key))
        assert [e.event for e in events] == ["thinking", "done"]
        result = events[-1].result
        assert isinstance(result, RunResult) and result.output == "mock answer: Invoice #42"
        assert result.usage.iterations == 1

        plain = agentry.update_endpoint(endpoint.id, enable_streaming=False)
        assert plain.enable_streaming is False
        answer = agentry.run(endpoint.slug, {"n": 1}, api_key=created.api_key)
        page = agentry.list_runs(endpoint.id)
        assert [r.id for r in page.runs] == [answer.run_id, result.run_id]
        assert all(r.status == "succeeded" and not r.is_test for r in page.runs)

        new_key = agentry.regenerate_key(endpoint.id)
        with pytest.raises(AuthenticationError) as old:
            agentry.run(endpoint.slug, "hi", api_key=created.api_key)
        assert old.value.code == "invalid_api_key" and old.value.status == 401
        assert agentry.run(endpoint.slug, "hi", api_key=new_key).output == "mock answer: hi"

        with pytest.raises(NotFoundError) as missing:
            agentry.get_endpoint("aep_nope")
        assert missing.value.code == "endpoint_not_found"
        with pytest.raises(UnprocessableError) as invalid:
            agentry.create_endpoint(ws.id, "", "x")
        assert invalid.value.code == "validation_error" and "name" in invalid.value.message


async def test_the_async_client_polls_async_runs_and_streams(gateway_url: str, user: str) -> None:
    async with AsyncClient(gateway_url, token=dev_token(user)) as agentry:
        ws = await agentry.create_workspace("Acme")
        queued = await agentry.create_endpoint(ws.id, "Later", "Be useful.", llm_provider="mock", async_mode=True)
        result = await agentry.run(queued.endpoint.slug, "later", api_key=queued.api_key)
        assert result.output == "mock answer: later" and result.run_id.startswith("run_")
        status = await agentry.run_status(result.run_id)  # as the owner
        assert status.status == "succeeded"

        streaming = await agentry.create_endpoint(
            ws.id, "Live", "Be useful.", llm_provider="mock", enable_streaming=True
        )
        kinds = [e.event async for e in agentry.stream(streaming.endpoint.slug, "go", api_key=streaming.api_key)]
        assert kinds == ["thinking", "done"]
        tested = await agentry.test_endpoint(streaming.endpoint.id, "owner test")
        assert tested.output == "mock answer: owner test"
        assert (await agentry.list_runs(streaming.endpoint.id)).runs[0].is_test

    async with AsyncClient(gateway_url, token="not-a-jwt") as stranger:
        with pytest.raises(AuthenticationError) as denied:
            await stranger.list_workspaces()
        assert denied.value.status == 401 and denied.value.code


def _refused(attempt: Callable[[], Any]) -> AgentryError:
    """The error of a run with a key just revoked: the contract gives every gateway up to a second to refuse it."""
    deadline = time.monotonic() + 10
    while True:
        try:
            attempt()
        except AgentryError as err:
            return err
        assert time.monotonic() < deadline, "the revoked key still runs"
        time.sleep(0.2)


def test_the_sync_client_issues_caps_and_revokes_caller_keys(gateway_url: str, user: str) -> None:
    with Client(gateway_url, token=dev_token(user)) as agentry:
        ws = agentry.create_workspace("Acme")
        created = agentry.create_endpoint(ws.id, "Priced", "x", llm_provider="mock", price_per_run_cents=5)
        endpoint = created.endpoint.id
        issued = agentry.create_key(endpoint, "acme", rate_limit_per_minute=50)
        assert isinstance(issued.key, Key) and issued.api_key.startswith(issued.key.prefix)
        assert issued.key.rate_limit_per_minute == 50 and issued.key.spend_cap_period == "month"

        ran = agentry.run(created.endpoint.slug, "hello", api_key=issued.api_key)
        assert ran.output == "mock answer: hello" and ran.tool_calls == []
        [only] = agentry.list_runs(endpoint, key_id=issued.key.id).runs
        assert only.id == ran.run_id and only.key_id == issued.key.id and only.tool_errors == 0

        capped = agentry.update_key(endpoint, issued.key.id, spend_cap_cents=0)
        assert capped.spend_cap_cents == 0 and agentry.get_key(endpoint, issued.key.id).spend_cap_cents == 0
        with pytest.raises(PaymentRequiredError) as cap:
            agentry.run(created.endpoint.slug, "more", api_key=issued.api_key)
        assert cap.value.status == 402 and cap.value.code == "key_spend_cap_reached"

        agentry.revoke_key(endpoint, issued.key.id)
        keys = {k.name: k for k in agentry.list_keys(endpoint)}
        assert keys["acme"].revoked_at is not None and keys["default"].revoked_at is None
        refused = _refused(lambda: agentry.run(created.endpoint.slug, "hi", api_key=issued.api_key))
        assert isinstance(refused, AuthenticationError) and refused.code == "invalid_api_key"
        assert agentry.run(created.endpoint.slug, "hi", api_key=created.api_key).output == "mock answer: hi"
        with pytest.raises(NotFoundError):
            agentry.revoke_key(endpoint, "key_nope")


async def test_the_async_client_manages_keys_and_webhooks(gateway_url: str, user: str) -> None:
    async with AsyncClient(gateway_url, token=dev_token(user)) as agentry:
        ws = await agentry.create_workspace("Acme")
        created = await agentry.create_endpoint(ws.id, "Bot", "x", llm_provider="mock")
        endpoint, slug = created.endpoint.id, created.endpoint.slug
        issued = await agentry.create_key(endpoint, "partner", spend_cap_cents=1000, spend_cap_period="day")
        assert (issued.key.spend_cap_cents, issued.key.spend_cap_period, issued.key.spent_cents) == (1000, "day", 0)
        assert (await agentry.run(slug, "async", api_key=issued.api_key)).output == "mock answer: async"
        assert [k.name for k in await agentry.list_keys(endpoint)] == ["default", "partner"]

        await agentry.revoke_key(endpoint, issued.key.id)
        assert (await agentry.get_key(endpoint, issued.key.id)).revoked_at is not None
        deadline = time.monotonic() + 10
        while True:  # every gateway refuses it within a second
            try:
                await agentry.run(slug, "again", api_key=issued.api_key)
            except AuthenticationError as refused:
                assert refused.code == "invalid_api_key" and refused.status == 401
                break
            assert time.monotonic() < deadline, "the revoked key still runs"
            await asyncio.sleep(0.2)

        hook = await agentry.create_webhook("http://127.0.0.1:9/hook", ["balance.low"], "ops")  # never sent: disabled
        assert hook.secret.startswith("whsec_") and hook.webhook.enabled
        assert [w.id for w in await agentry.list_webhooks()] == [hook.webhook.id]
        paused = await agentry.update_webhook(hook.webhook.id, enabled=False)
        assert paused.enabled is False and (await agentry.get_webhook(hook.webhook.id)).enabled is False
        with pytest.raises(ConflictError) as disabled:
            await agentry.test_webhook(hook.webhook.id)
        assert disabled.value.code == "webhook_disabled"
        await agentry.delete_webhook(hook.webhook.id)
        assert await agentry.list_webhooks() == []


async def test_the_async_client_lists_an_mcp_servers_tools_live(gateway_url: str, user: str) -> None:
    mcp = MCPServer("calc")

    @mcp.tool(description="Adds two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    url, stop = await serve_asgi(mcp.streamable_http_app())
    try:
        async with AsyncClient(gateway_url, token=dev_token(user)) as agentry:
            ws = await agentry.create_workspace("Acme")
            server = await agentry.create_server(ws.id, "calc", f"{url}/mcp")
            [tool] = await agentry.list_server_tools(ws.id, server.id)
            assert (tool.name, tool.description) == ("add", "Adds two integers.")
            assert tool.llm_name.endswith("add") and set(tool.input_schema["properties"]) == {"a", "b"}
            with pytest.raises(NotFoundError):
                await agentry.list_server_tools(ws.id, "srv_nope")
    finally:
        await stop()
