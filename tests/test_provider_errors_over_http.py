"""An LLM provider that echoes the endpoint's key in its error, altered (upper-cased, cut short), leaks no part
of it: the caller gets a fixed message naming the provider and its status; the owner's run history and
`run.failed` keep the provider's words with every 8-character fragment of the key redacted; so do the logs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentry_common import subjects
from agentry_dev.stack import Stack
from agentry_dev.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture
async def echoing_provider() -> AsyncIterator[str]:
    """An OpenAI-compatible server that refuses every key, quoting it back upper-cased and truncated."""

    async def refuse(request: Request) -> JSONResponse:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key.upper()}. Keys look like {key[:-4]}****."
        error = openai.types.ErrorObject(message=message, type="invalid_request_error", param=None, code="invalid_key")
        return JSONResponse({"error": error.model_dump(mode="json", exclude_none=True)}, status_code=401)

    url, stop = await serve_asgi(Starlette(routes=[Route("/v1/chat/completions", refuse, methods=["POST"])]))
    try:
        yield f"{url}/v1"
    finally:
        await stop()


def _fragments(key: str) -> set[str]:
    return {key[i : i + 8].lower() for i in range(len(key) - 7)}


def _leaked(text: str, key: str) -> set[str]:
    return {f for f in _fragments(key) if f in text.lower()}


async def _outcome(nc: Client, run_id: str) -> dict[str, Any]:
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=10)
    for _ in range(50):
        sub = await js.pull_subscribe(subjects.RUN_FAILED, stream=subjects.RUN_EVENTS_STREAM.name, config=config)
        try:
            pending = (await sub.consumer_info()).num_pending
            events = [orjson.loads(m.data) for m in (await sub.fetch(pending, timeout=5) if pending else [])]
        finally:
            await sub.unsubscribe()
        found = [e for e in events if e["run_id"] == run_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)  # the caller's answer may come before the event is stored
    raise AssertionError(f"no run.failed for {run_id}")


async def test_a_provider_echoing_the_key_altered_leaks_none_of_it(
    http: httpx.AsyncClient, auth: dict[str, str], nc: Client, stack: Stack, echoing_provider: str
) -> None:
    llm_key = f"sk-test-secret-echo-{uuid.uuid4().hex}"
    ws = (await http.post("/api/workspaces", json={"name": "echo"}, headers=auth)).json()["workspace"]["id"]
    body = {"name": "echo", "workspace_id": ws, "system_prompt": "p", "llm_provider": "custom",
            "llm_base_url": echoing_provider, "llm_api_key": llm_key}  # fmt: skip
    created = (await http.post("/api/agent-endpoints", json=body, headers=auth)).json()
    caller = {"X-API-Key": created["api_key"]}

    r = await http.post(created["run_url"], json={"input": "hello"}, headers=caller)
    assert r.status_code == 502, r.text
    assert r.json() == {"error": {"code": "llm_auth_error", "message": "custom answered 401"}}
    run_id = r.headers["X-Run-Id"]

    # The owner is told why, in the provider's words, with the key redacted.
    history = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()
    [recorded] = [run for run in history["runs"] if run["id"] == run_id]
    owner_message = recorded["error"]["message"]
    assert owner_message == (
        "custom answered 401 — the provider said: Incorrect API key provided: [redacted]. "
        "Keys look like [redacted]****."
    )
    event = await _outcome(nc, run_id)
    assert event["error"] == {"code": "llm_auth_error", "message": owner_message}

    # A caller polling an async run gets the fixed message too.
    update = {"async_mode": True}
    assert (await http.patch(f"/api/agent-endpoints/{created['endpoint']['id']}", json=update, headers=auth)).is_success
    accepted = (await http.post(created["run_url"], json={"input": "later"}, headers=caller)).json()
    status: dict[str, Any] = {}
    for _ in range(100):
        status = (await http.get(accepted["status_url"], headers=caller)).json()
        if status["status"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert status["error"] == {"code": "llm_auth_error", "message": "custom answered 401"}

    logs = b"\n".join(p.read_bytes() for p in sorted((stack.data_dir / "logs").glob("*.log"))).decode(errors="replace")
    seen = {"502 body": r.text, "history": orjson.dumps(history).decode(), "run.failed": orjson.dumps(event).decode(),
            "status": orjson.dumps(status).decode(), "logs": logs}  # fmt: skip
    assert {where: _leaked(text, llm_key) for where, text in seen.items()} == {where: set() for where in seen}
