"""An endpoint's own LLM key is kept in the runner's memory once resolved, and still a changed or deleted key is
never used by a run started after the change was acknowledged. Through all four services (real NATS and
PostgreSQL); the only fake is an OpenAI-compatible provider on loopback that records the key it receives."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from nats.aio.client import Client
from openai.types.chat import ChatCompletion, completion_create_params
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentry_common import rpc, subjects
from agentry_common.broker import publish_event
from agentry_common.events import EndpointSnapshot, RunRequested, SecretsChanged, run_progress
from agentry_common.requests import DeleteSecret, Done, StoredSecret, StoreSecret
from agentry_dev.stack import Stack
from agentry_dev.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")
REQUEST = TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming)


@dataclass
class FakeProvider:
    """OpenAI chat completions on loopback: holds each request against the SDK's request type, answers with
    the SDK's response type, and records the bearer key of every call (None without one)."""

    url: str = ""
    keys: list[str | None] = field(default_factory=list)

    async def completions(self, request: Request) -> JSONResponse:
        body = REQUEST.validate_python(await request.json())
        messages = list(body["messages"])  # the SDK's type checks each message as it is read
        auth = request.headers.get("authorization")
        self.keys.append(auth.removeprefix("Bearer ") if auth else None)
        answer = ChatCompletion.model_validate(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"read {len(messages)} messages"},
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            }
        )
        return JSONResponse(answer.model_dump(mode="json", exclude_none=True))


@pytest.fixture
async def provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    url, stop = await serve_asgi(app)
    fake.url = f"{url}/v1"
    yield fake
    await stop()


def resolved_by_keys(stack: Stack) -> float:
    """How many secrets the keys service has resolved since it started (its own counter)."""
    text = httpx.get(f"{stack.service('keys').url}/metrics", timeout=10).text
    match = re.search(r'^agentry_keys_secrets_resolved_total\{outcome="resolved"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def run(http: httpx.AsyncClient, created: dict[str, Any]) -> httpx.Response:
    return await http.post(created["run_url"], json={"input": "hello"}, headers={"X-API-Key": created["api_key"]})


async def secret_id_of(stack: Stack, endpoint_id: str) -> str:
    url = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT llm_secret_id FROM gateway.endpoints WHERE id = %s", (endpoint_id,))
        row = await cursor.fetchone()
    assert row is not None and row[0]
    return str(row[0])


async def test_a_changed_or_removed_llm_key_is_not_used_by_the_next_run_and_a_cached_one_skips_keys(
    http: httpx.AsyncClient, auth: dict[str, str], provider: FakeProvider, stack: Stack
) -> None:
    ws = (await http.post("/api/workspaces", json={"name": "byo"}, headers=auth)).json()["workspace"]["id"]
    old, new = f"sk-test-secret-old-{uuid.uuid4().hex}", f"sk-test-secret-new-{uuid.uuid4().hex}"
    body = {
        "name": "byo", "workspace_id": ws, "system_prompt": "Answer.", "llm_provider": "custom",
        "llm_base_url": provider.url, "llm_model": "byo-model", "llm_api_key": old,
    }  # fmt: skip
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    url = f"/api/agent-endpoints/{created['endpoint']['id']}"

    assert (await run(http, created)).status_code == 200  # the runner resolves the key and keeps it
    resolved = resolved_by_keys(stack)
    for _ in range(3):
        r = await run(http, created)
        assert r.status_code == 200 and r.json()["output"] == "read 2 messages", r.text
    assert provider.keys == [old] * 4
    assert resolved_by_keys(stack) == resolved, "a run with a cached key asked the keys service"

    r = await http.patch(url, json={"llm_api_key": new}, headers=auth)
    assert r.status_code == 200, r.text
    assert (await run(http, created)).status_code == 200
    assert provider.keys[-1] == new  # the very next run, on the runner that had the old key in memory

    r = await http.patch(url, json={"llm_api_key": None}, headers=auth)
    assert r.status_code == 200 and r.json()["endpoint"]["has_llm_api_key"] is False
    assert (await run(http, created)).status_code == 200
    assert provider.keys[-1] is None  # no key of its own any more, and the platform has none for `custom`


async def test_a_run_naming_a_deleted_key_does_not_get_it_from_the_runners_memory(
    http: httpx.AsyncClient, auth: dict[str, str], provider: FakeProvider, stack: Stack, nc: Client, user: str
) -> None:
    """A run request taken before the endpoint's DELETE (or from a gateway that has not yet heard of it) still
    names the deleted key: the runner has it in memory, and must not use it."""
    ws = (await http.post("/api/workspaces", json={"name": "byo"}, headers=auth)).json()["workspace"]["id"]
    key = f"sk-test-secret-gone-{uuid.uuid4().hex}"
    body = {
        "name": "byo", "workspace_id": ws, "system_prompt": "Answer.", "llm_provider": "custom",
        "llm_base_url": provider.url, "llm_model": "byo-model", "llm_api_key": key,
    }  # fmt: skip
    created = (await http.post("/api/agent-endpoints", json=body, headers=auth)).json()
    endpoint = created["endpoint"]
    assert (await run(http, created)).status_code == 200 and provider.keys == [key]  # now in memory
    snapshot = EndpointSnapshot.model_validate(
        {**endpoint, "owner_id": user, "llm_secret_id": await secret_id_of(stack, endpoint["id"])}
    )

    assert (await http.delete(f"/api/agent-endpoints/{endpoint['id']}", headers=auth)).status_code == 204
    assert (await run(http, created)).status_code == 404

    stale = RunRequested(run_id=f"run_{uuid.uuid4().hex}", endpoint=snapshot, input="hello")
    sub = await nc.subscribe(subjects.run_progress(stale.run_id))
    await publish_event(nc.jetstream(), subjects.RUN_REQUESTED, stale)
    progress = run_progress.validate_json((await sub.next_msg(timeout=30)).data)
    await sub.unsubscribe()
    assert progress.event == "error" and progress.data.code == "llm_auth_error", progress
    assert provider.keys == [key]  # the provider never saw the deleted key again


async def test_a_deleted_secret_is_announced_by_id_only_before_its_deletion_is_answered(nc: Client, user: str) -> None:
    value = f"sk-test-secret-announced-{uuid.uuid4().hex}"
    stored = await rpc.call(nc, subjects.SECRETS_STORE, StoreSecret(owner_id=user, value=value), StoredSecret)
    sub = await nc.subscribe(subjects.SECRETS_CHANGED)
    await nc.flush()
    await rpc.call(nc, subjects.SECRETS_DELETE, DeleteSecret(secret_id=stored.secret_id), Done)
    # Already here when the answer is: the broadcast left the keys service first, on the same connection.
    assert sub.pending_msgs == 1
    msg = await sub.next_msg(timeout=1)
    await sub.unsubscribe()
    assert SecretsChanged.model_validate_json(msg.data).secret_ids == [stored.secret_id]
    assert value.encode() not in msg.data
