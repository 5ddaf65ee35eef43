"""Run dispatch through the gateway, against the whole stack: a sync run's answer is its single progress
message; a streaming endpoint relays every step and its owner's test runs (answered whole) still end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


async def test_sync_runs_are_answered_one_after_another(
    http: httpx.AsyncClient, make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint()
    key = {"X-API-Key": created["api_key"]}
    run_ids = set()
    for i in range(3):
        r = await http.post(created["run_url"], json={"input": f"invoice {i}"}, headers=key)
        assert r.status_code == 200, r.text
        run_ids.add(r.json()["run_id"])
    assert len(run_ids) == 3


async def test_a_streaming_endpoint_relays_each_step_and_its_test_runs_still_answer_whole(
    http: httpx.AsyncClient, make_endpoint: EndpointFactory, auth: dict[str, str]
) -> None:
    created = await make_endpoint(enable_streaming=True)
    r = await http.post(created["run_url"], json={"input": "hello"}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[0] == "thinking" and events[-1] == "done"

    # /test answers with the whole result while the runner still streams the steps of this endpoint
    r = await http.post(f"/api/agent-endpoints/{created['endpoint']['id']}/test", json={"input": "hi"}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["iterations"] == 1


async def test_a_streaming_endpoints_run_answered_whole_has_unsubscribed_when_it_returns(stack: Any) -> None:
    """`Dispatcher.run` ends its progress subscription itself before answering, rather than leaving it to a
    finalizer task the event loop runs some time later."""
    from agentry_common.events import EndpointSnapshot
    from agentry_gateway.dispatch import Dispatcher
    from agentry_gateway.settings import Settings

    nc = await nats.connect(stack.nats_url)
    try:
        dispatcher = Dispatcher(nc, Settings(database_url=stack.database_url))
        snapshot = EndpointSnapshot(
            id="aep_dispatch_test", slug="dispatch-test", owner_id="user-dispatch", workspace_id="ws_dispatch",
            system_prompt="p", llm_provider="mock", llm_model="mock-1", enable_streaming=True,
        )  # fmt: skip
        await dispatcher.run(snapshot, "warm-up", is_test=True)  # nats-py opens its reply subscription once
        await asyncio.sleep(0.2)  # and whatever the warm-up left to the event loop is done
        before = len(nc._subs)
        result = await dispatcher.run(snapshot, "hello", is_test=True)
        assert result.usage.iterations == 1
        assert len(nc._subs) == before
    finally:
        await nc.drain()
