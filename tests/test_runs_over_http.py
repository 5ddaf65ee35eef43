"""Runs as a caller sees them over HTTP, through all four services: a tool-using streaming run (SSE), an
async run polled to completion, JSON output, owner test runs, and request limits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from mcp.server.mcpserver import MCPServer

from agentry_dev.stack import Stack
from agentry_dev.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture
async def tool_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real MCP server (streamable HTTP) on loopback; records the calls it gets."""
    calls: list[dict[str, Any]] = []
    mcp = MCPServer("calc")

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        calls.append({"a": a, "b": b})
        return a + b

    url, stop = await serve_asgi(mcp.streamable_http_app())
    try:
        yield f"{url}/mcp", calls
    finally:
        await stop()


async def _endpoint(http: httpx.AsyncClient, auth: dict[str, str], ws: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "agent", "workspace_id": ws, "system_prompt": "Be useful.", "llm_provider": "mock", **fields}
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _workspace(http: httpx.AsyncClient, auth: dict[str, str]) -> str:
    return str((await http.post("/api/workspaces", json={"name": "w"}, headers=auth)).json()["workspace"]["id"])


def _sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_a_streaming_tool_using_run_sends_thinking_tool_call_tool_result_then_done(
    http: httpx.AsyncClient, auth: dict[str, str], tool_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, calls = tool_server
    ws = await _workspace(http, auth)
    r = await http.post(f"/api/workspaces/{ws}/servers", json={"name": "calc", "url": url}, headers=auth)
    assert r.status_code == 201, r.text
    created = await _endpoint(http, auth, ws, enable_streaming=True)
    run_input = {"mock": {"tool": "calc__add", "arguments": {"a": 2, "b": 3}}}

    async with http.stream("POST", created["run_url"], json={"input": run_input},
                           headers={"X-API-Key": created["api_key"]}) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = response.headers["X-Run-Id"]
        text = (await response.aread()).decode()

    events = _sse(text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "thinking" and kinds[-1] == "done", kinds
    assert kinds.index("tool_call") < kinds.index("tool_result") < len(kinds) - 1
    assert kinds.count("thinking") == 2  # one per LLM call
    call = next(data for kind, data in events if kind == "tool_call")
    assert call["name"] == "calc__add" and call["arguments"] == {"a": 2, "b": 3}
    result = next(data for kind, data in events if kind == "tool_result")
    assert "5" in json.dumps(result["result"]) and not result.get("error")
    done = events[-1][1]
    assert done["run_id"] == run_id and done["usage"]["iterations"] == 2
    assert [c["name"] for c in done["tool_calls"]] == ["calc__add"]
    assert calls == [{"a": 2, "b": 3}]

    history = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()
    recorded = history["runs"][0]
    assert recorded["id"] == run_id and recorded["iterations"] == 2
    assert recorded["tool_calls"][0]["arguments"] == {"a": 2, "b": 3}


async def test_an_async_run_answers_202_and_its_status_url_reaches_succeeded(
    http: httpx.AsyncClient, auth: dict[str, str], make_auth: Any
) -> None:
    ws = await _workspace(http, auth)
    created = await _endpoint(http, auth, ws, async_mode=True)
    other = await _endpoint(http, auth, ws)
    key = {"X-API-Key": created["api_key"]}
    r = await http.post(created["run_url"], json={"input": "later, please"}, headers=key)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "queued" and accepted["status_url"] == f"/api/runs/{accepted['run_id']}"
    assert r.headers["X-Run-Id"] == accepted["run_id"]

    status: dict[str, Any] = {}
    for _ in range(100):
        status = (await http.get(accepted["status_url"], headers=key)).json()
        assert status["status"] in ("queued", "running", "succeeded"), status
        if status["status"] == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert status["status"] == "succeeded" and status["output"] and status["usage"]["iterations"] == 1
    assert (await http.get(accepted["status_url"], headers=auth)).json()["status"] == "succeeded"  # owner JWT
    assert (await http.get(accepted["status_url"], headers={"X-API-Key": other["api_key"]})).status_code == 404
    assert (await http.get(accepted["status_url"], headers=make_auth("stranger"))).status_code == 404
    assert (await http.get(f"/api/runs/run_{uuid.uuid4().hex}", headers=key)).status_code == 404


async def test_json_output_is_the_parsed_value_and_test_runs_are_never_charged(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ws = await _workspace(http, auth)
    schema = {"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]}
    created = await _endpoint(http, auth, ws, output_format="json", output_schema=schema, price_per_run_cents=7)
    r = await http.post(created["run_url"], json={"input": {"invoice": "3 x $10"}},
                        headers={"X-API-Key": created["api_key"]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["output"], dict) and "total" in r.json()["output"]

    endpoint_id = created["endpoint"]["id"]
    r = await http.post(f"/api/agent-endpoints/{endpoint_id}/test", json={"input": {"x": 1}}, headers=auth)
    assert r.status_code == 200, r.text
    test_run = r.json()["run_id"]
    runs = (await http.get(f"/api/agent-endpoints/{endpoint_id}/runs", headers=auth)).json()["runs"]
    by_id = {run["id"]: run for run in runs}
    assert by_id[test_run]["is_test"] is True and by_id[test_run]["charge"] == {"amount_cents": 0, "status": "none"}


async def test_input_schema_violations_and_oversized_bodies_are_refused_before_any_run(
    stack: Stack, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ws = await _workspace(http, auth)
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    created = await _endpoint(http, auth, ws, input_schema=schema)
    key = {"X-API-Key": created["api_key"]}
    r = await http.post(created["run_url"], json={"input": {"txt": "typo"}}, headers=key)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = await http.post(created["run_url"], json={"input": {"text": "x" * (1024 * 1024 + 10)}}, headers=key)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = await http.post(created["run_url"], content=b"{not json", headers={**key, "content-type": "application/json"})
    assert r.status_code == 422
    runs = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()["runs"]
    assert runs == []


async def test_a_synchronous_run_answers_its_tool_calls_and_failed_calls_are_counted(
    http: httpx.AsyncClient, auth: dict[str, str], tool_server: tuple[str, list[dict[str, Any]]], nc: Any
) -> None:
    url, _ = tool_server
    ws = await _workspace(http, auth)
    r = await http.post(f"/api/workspaces/{ws}/servers", json={"name": "calc", "url": url}, headers=auth)
    assert r.status_code == 201, r.text
    created = await _endpoint(http, auth, ws)
    key = {"X-API-Key": created["api_key"]}
    completed = await nc.subscribe("run.completed")
    try:
        ok = await http.post(created["run_url"], json={"input": {"mock": {"tool": "calc__add",
                             "arguments": {"a": 2, "b": 3}}}}, headers=key)  # fmt: skip
        assert ok.status_code == 200, ok.text
        calls = ok.json()["tool_calls"]
        assert [c["name"] for c in calls] == ["calc__add"] and calls[0]["arguments"] == {"a": 2, "b": 3}
        assert "5" in json.dumps(calls[0]["result"]) and calls[0]["error"] is None

        failed = await http.post(created["run_url"], json={"input": {"mock": {"tool": "calc__nope"}}}, headers=key)
        assert failed.status_code == 200, failed.text  # a failed tool call is told to the model; the run goes on
        assert failed.json()["tool_calls"][0]["error"]
        events: dict[str, Any] = {}
        while not {ok.json()["run_id"], failed.json()["run_id"]} <= events.keys():
            event = json.loads((await completed.next_msg(timeout=30)).data)
            events[event["run_id"]] = event
    finally:
        await completed.unsubscribe()
    assert events[ok.json()["run_id"]]["tool_errors"] == 0
    assert events[failed.json()["run_id"]]["tool_errors"] == 1
    history = (await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs", headers=auth)).json()
    by_id = {run["id"]: run for run in history["runs"]}
    assert by_id[failed.json()["run_id"]]["tool_errors"] == 1 and by_id[ok.json()["run_id"]]["tool_errors"] == 0
