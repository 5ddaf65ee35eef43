"""The OpenAI-compatible run API, driven by the official `openai` SDK against the whole stack: completions with
usage, streamed chunks, a tool-using endpoint, conversation history reaching the model, errors as the SDK's own
exception types, and the runs in history and charged once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from mcp.server.mcpserver import MCPServer
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

pytestmark = pytest.mark.usefixtures("stack")


async def _endpoint(http: httpx.AsyncClient, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    ws = (await http.post("/api/workspaces", json={"name": "w"}, headers=auth)).json()["workspace"]["id"]
    servers = fields.pop("servers", [])
    for name, url in servers:
        r = await http.post(f"/api/workspaces/{ws}/servers", json={"name": name, "url": url}, headers=auth)
        assert r.status_code == 201, r.text
    body = {"name": "agent", "workspace_id": ws, "system_prompt": "Be useful.", "llm_provider": "mock", **fields}
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _client(gateway_url: str, key: str) -> openai.AsyncOpenAI:
    # No retries: a 429 must surface as the SDK's exception, not be retried away.
    return openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0, timeout=30)


async def _eventually(check: Callable[[], Awaitable[Any]], tries: int = 150) -> Any:
    for _ in range(tries):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    return None


async def test_a_completion_answers_with_usage_is_in_history_and_charged_once(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str
) -> None:
    deposit = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    assert (await http.post("/api/balance/deposit", json={"amount_cents": 500}, headers=deposit)).status_code == 201
    created = await _endpoint(http, auth, price_per_run_cents=7)
    slug = created["endpoint"]["slug"]
    client = _client(gateway_url, created["api_key"])

    completion = await client.chat.completions.create(model=slug, messages=[{"role": "user", "content": "hello"}])

    assert completion.object == "chat.completion" and completion.model == slug
    assert completion.id.startswith("run_")
    assert completion.choices[0].message.content == "mock answer: hello"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    runs = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()["runs"]
    assert [r["id"] for r in runs] == [completion.id]
    assert runs[0]["tokens_input"] == usage.prompt_tokens and runs[0]["tokens_output"] == usage.completion_tokens
    assert runs[0]["is_test"] is False

    async def charged() -> list[dict[str, Any]]:
        txs = (await http.get("/api/balance/transactions", headers=auth)).json()["transactions"]
        return [t for t in txs if t["kind"] == "run_charge"]

    charges = await _eventually(charged)
    assert charges and [(c["run_id"], c["amount_cents"]) for c in charges] == [(completion.id, -7)]
    await asyncio.sleep(1)  # a second charge, were there one, would have landed by now
    assert len(await charged()) == 1
    assert (await http.get("/api/balance", headers=auth)).json()["balance_cents"] == 493


async def test_the_answer_validates_against_the_sdks_own_models(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str
) -> None:
    created = await _endpoint(http, auth, output_format="json")
    key = {"Authorization": f"Bearer {created['api_key']}"}
    body = {"model": created["endpoint"]["slug"], "messages": [{"role": "user", "content": "hi"}]}
    r = await http.post("/v1/chat/completions", json=body, headers=key)
    assert r.status_code == 200, r.text
    parsed = ChatCompletion.model_validate(r.json())  # validated, not constructed as the SDK does
    assert parsed.id == r.headers["X-Run-Id"] and r.headers["X-RateLimit-Limit"]
    assert json.loads(parsed.choices[0].message.content or "") == {"answer": "hi"}  # JSON output as JSON text

    r = await http.post("/v1/chat/completions", json={**body, "stream": True}, headers=key)
    frames = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(f) for f in frames[:-1]]
    assert {c.id for c in chunks} == {r.headers["X-Run-Id"]}


async def test_a_streamed_completion_ends_with_a_usage_chunk(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str
) -> None:
    created = await _endpoint(http, auth)
    client = _client(gateway_url, created["api_key"])
    stream = await client.chat.completions.create(
        model=created["endpoint"]["slug"],
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock answer: stream me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens > 0
    runs = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()["runs"]
    assert [r["id"] for r in runs] == [last.id]
    assert runs[0]["tokens_output"] == last.usage.completion_tokens


@pytest.fixture
async def calc(serve_app: Any) -> AsyncIterator[tuple[str, list[dict[str, int]]]]:
    calls: list[dict[str, int]] = []
    mcp = MCPServer("calc")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        calls.append({"a": a, "b": b})
        return a + b

    url, stop = await serve_app(mcp.streamable_http_app())
    try:
        yield f"{url}/mcp", calls
    finally:
        await stop()


async def test_a_tool_using_endpoint_calls_its_own_tools(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str, calc: tuple[str, list[dict[str, int]]]
) -> None:
    url, calls = calc
    created = await _endpoint(http, auth, servers=[("calc", url)])
    client = _client(gateway_url, created["api_key"])
    directive = json.dumps({"mock": {"tool": "calc__add", "arguments": {"a": 2, "b": 3}}})
    stream = await client.chat.completions.create(
        model=created["endpoint"]["slug"], messages=[{"role": "user", "content": directive}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == 'mock answer: {"result":5}' and calls == [{"a": 2, "b": 3}]
    runs = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()["runs"]
    assert runs[0]["iterations"] == 2 and [c["name"] for c in runs[0]["tool_calls"]] == ["calc__add"]


@pytest.fixture
async def fake_openai(serve_app: Any) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible model on loopback (a `custom` endpoint's provider); keeps the bodies it got."""
    seen: list[dict[str, Any]] = []

    async def completions(request: Request) -> JSONResponse:
        seen.append(await request.json())
        answer = ChatCompletion.model_validate(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": "fake-1",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Lyon."}}
                ],
                "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32},
            }
        )
        return JSONResponse(answer.model_dump(mode="json", exclude_none=True))

    url, stop = await serve_app(Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])]))
    try:
        yield f"{url}/v1", seen
    finally:
        await stop()


async def test_earlier_turns_reach_the_model_after_the_endpoints_system_prompt(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str, fake_openai: tuple[str, list[dict[str, Any]]]
) -> None:
    base_url, seen = fake_openai
    created = await _endpoint(
        http, auth, llm_provider="custom", llm_base_url=base_url, llm_model="fake-1", system_prompt="Cities only."
    )
    client = _client(gateway_url, created["api_key"])
    completion = await client.chat.completions.create(
        model=created["endpoint"]["slug"],
        messages=[
            {"role": "user", "content": "Biggest city in France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "And the second?"}]},
        ],
        temperature=1.5,  # accepted and ignored: the endpoint's own settings rule
    )
    assert completion.choices[0].message.content == "Lyon."
    assert completion.usage is not None and completion.usage.prompt_tokens == 30
    sent = [(m["role"], m["content"]) for m in seen[-1]["messages"]]
    assert sent[0][0] == "system" and "Cities only." in sent[0][1]
    assert sent[1:] == [("user", "Biggest city in France?"), ("assistant", "Paris."), ("user", "And the second?")]
    assert seen[-1]["model"] == "fake-1" and seen[-1]["temperature"] != 1.5


async def test_errors_surface_as_the_sdks_own_exceptions(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str
) -> None:
    created = await _endpoint(http, auth)
    other = await _endpoint(http, auth)
    slug = created["endpoint"]["slug"]
    hello = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.AuthenticationError) as bad_key:
        await _client(gateway_url, "aek_not_a_key").chat.completions.create(model=slug, messages=hello)
    assert bad_key.value.code == "invalid_api_key" and bad_key.value.type == "authentication_error"

    client = _client(gateway_url, created["api_key"])
    with pytest.raises(openai.NotFoundError) as not_mine:
        await client.chat.completions.create(model=other["endpoint"]["slug"], messages=hello)
    assert not_mine.value.code == "model_not_found" and not_mine.value.param == "model"

    with pytest.raises(openai.BadRequestError) as system:
        await client.chat.completions.create(model=slug, messages=[{"role": "system", "content": "x"}, *hello])
    assert system.value.code == "system_message_not_supported" and system.value.param == "messages.0"

    with pytest.raises(openai.BadRequestError) as tools:
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        await client.chat.completions.create(model=slug, messages=hello, tools=[tool])
    assert tools.value.code == "tools_not_supported"

    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        await client.chat.completions.create(model=slug, messages=[])
    assert invalid.value.code == "validation_error" and invalid.value.param == "messages"

    failing = [{"role": "user", "content": json.dumps({"mock": {"fail": "llm_provider_error"}})}]
    with pytest.raises(openai.InternalServerError) as upstream:
        await client.chat.completions.create(model=slug, messages=failing)
    assert upstream.value.status_code == 502 and upstream.value.code == "llm_provider_error"
    assert upstream.value.response.headers["X-Run-Id"].startswith("run_")
    stream = await client.chat.completions.create(model=slug, messages=failing, stream=True)
    with pytest.raises(openai.APIError) as mid_stream:
        [chunk async for chunk in stream]
    assert mid_stream.value.code == "llm_provider_error"

    models = await client.models.list()
    assert [m.id for m in models.data] == [slug]
    runs = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()["runs"]
    assert [r["status"] for r in runs] == ["failed", "failed"]  # refused requests started nothing


async def test_both_faces_share_the_rate_limit_and_the_sdk_gets_a_rate_limit_error(
    http: httpx.AsyncClient, auth: dict[str, str], gateway_url: str
) -> None:
    # A public endpoint is limited per client address (20 a minute by default): the window fills through
    # `/api/run`, and the next run through `/v1` is refused, since both are the same run. (A gateway with a
    # lower limit would redeclare the limiter's streams for every gateway of the session.)
    created = await _endpoint(http, auth, auth_mode="public")
    slug = created["endpoint"]["slug"]
    filled = await asyncio.gather(*(http.post(created["run_url"], json={"input": "hi"}) for _ in range(20)))
    assert [r.status_code for r in filled] == [200] * 20
    client = _client(gateway_url, created["api_key"])
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model=slug, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.code == "rate_limited" and limited.value.type == "rate_limit_error"
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    assert limited.value.response.headers["X-RateLimit-Remaining"] == "0"
    runs = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs?limit=100", headers=auth)).json()
    assert len(runs["runs"]) == 20


async def test_v1_errors_outside_a_run_keep_openais_shape(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await _endpoint(http, auth)
    key = {"Authorization": f"Bearer {created['api_key']}"}
    huge = {"model": created["endpoint"]["slug"], "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}
    r = await http.post("/v1/chat/completions", json=huge, headers=key)
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["code"] == "payload_too_large"
    r = await http.post("/v1/embeddings", json={}, headers=key)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url" and "param" in r.json()["error"]
    r = await http.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
