"""The SDK against the whole stack, sync and async: management, runs (plain, streamed, async-polled), the
wallet, and typed errors carrying the API's code."""

from __future__ import annotations

import pytest

from agentry import AsyncClient, AuthenticationError, Client, NotFoundError, UnprocessableError
from agentry.models import RunResult
from agentry_common.stack import dev_token

pytestmark = pytest.mark.usefixtures("stack")


def test_the_sync_client_manages_runs_streams_and_pays(gateway_url: str, user: str) -> None:
    with Client(gateway_url, token=dev_token(user)) as agentry:
        assert agentry.deposit(500).balance_cents == 500
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
