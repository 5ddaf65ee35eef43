"""The agent loop, in process, with a real MCP server: tool round trips, the tool budget, JSON outputs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from agentry_common.errors import UpstreamFailed
from agentry_common.events import ChatTurn, EndpointSnapshot, McpServerRef, ProgressData, progress_of
from agentry_common.netguard import guard_transport
from agentry_runner.agent import LIMIT_REACHED, MODEL_RESULT_CHARS, RECORD_RESULT_CHARS, Agent, RunState
from agentry_runner.providers import PROVIDERS, Connection
from agentry_runner.tools import Toolbox

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


def endpoint(**fields: Any) -> EndpointSnapshot:
    base = {"id": "aep", "slug": "s", "owner_id": "u", "workspace_id": "w", "system_prompt": "Help.",
            "llm_provider": "mock", "llm_model": "mock-1"}  # fmt: skip
    return EndpointSnapshot.model_validate({**base, **fields})


async def run_agent(
    ep: EndpointSnapshot,
    value: Any,
    mcp_url: str | None = None,
    conn: Connection | None = None,
    history: list[ChatTurn] | None = None,
):
    transport = guard_transport(httpx2.AsyncHTTPTransport(trust_env=False), allow_private=True)
    box = Toolbox(transport, tool_timeout_s=5)
    if mcp_url:
        await box.open([McpServerRef(slug="weather", url=mcp_url)], {})
    state = RunState()
    events: list[tuple[str, dict[str, Any]]] = []

    async def emit(data: ProgressData) -> None:
        events.append((progress_of("run_test", data).event, data.model_dump()))  # as the SSE event has it

    provider = PROVIDERS[ep.llm_provider]
    conn = conn or Connection(None, "", None)  # the mock model makes no HTTP call
    deadline = asyncio.get_running_loop().time() + 10
    try:
        result = await Agent(provider, conn, box, deadline, state, emit).run(ep, value, history or [])
    finally:
        box.close()
    return result, state, events


async def test_a_tool_using_run_takes_two_iterations_and_feeds_the_result_back(mcp_server):
    value = {"city": "Oslo", "mock": {"tool": "weather__forecast", "arguments": {"city": "Oslo", "days": 3}}}
    result, state, events = await run_agent(endpoint(), value, mcp_server.url)
    assert ("forecast", {"city": "Oslo", "days": 3}) in mcp_server.calls
    assert state.iterations == 2
    assert [(c.name, c.arguments, c.error) for c in state.tool_calls] == [
        ("weather__forecast", {"city": "Oslo", "days": 3}, None)
    ]
    assert state.tool_calls[0].result["sky"] == "sunny"
    assert result == 'mock answer: {"city":"Oslo","days":3,"sky":"sunny","temp_c":21}'
    assert [kind for kind, _ in events] == ["thinking", "tool_call", "tool_result", "thinking"]
    assert events[0][1] == {"iteration": 1} and events[3][1] == {"iteration": 2}


async def test_a_failing_tool_is_told_to_the_model_and_the_run_goes_on(mcp_server):
    value = {"mock": {"tool": "weather__explode", "arguments": {"reason": "x"}}}
    result, state, _ = await run_agent(endpoint(), value, mcp_server.url)
    assert state.tool_calls[0].error and result.startswith("mock answer: error: ")


async def test_the_tool_budget_stops_tool_calls_and_forces_an_answer(mcp_server):
    value = {"mock": {"tool": "weather__forecast", "arguments": {"city": "Rome"}, "rounds": 5}}
    result, state, _ = await run_agent(endpoint(max_tool_calls=2), value, mcp_server.url)
    assert len(state.tool_calls) == 2 and state.iterations == 3
    assert result.startswith("mock answer: ")


async def test_parallel_calls_beyond_the_budget_are_refused_to_the_model(fake_llm, llm_http, mcp_server):
    calls = [("weather__forecast", {"city": c}) for c in ("A", "B", "C")]
    model = fake_llm.model(fake_llm.openai(calls=calls), fake_llm.openai("done"))
    conn = Connection(llm_http, f"{fake_llm.url}/openai/v1", "sk-test")
    ep = endpoint(llm_provider="openai", llm_model=model, max_tool_calls=2)
    result, state, _ = await run_agent(ep, "go", mcp_server.url, conn)
    assert result == "done"
    assert [c.arguments["city"] for c in state.tool_calls] == ["A", "B"]
    tool_messages = [m for m in fake_llm.requests(model)[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_0", "call_1", "call_2"]
    assert tool_messages[2]["content"] == LIMIT_REACHED
    assert fake_llm.requests(model)[1].body["tool_choice"] == "none"


async def test_json_output_that_matches_the_schema_is_the_parsed_value():
    result, state, _ = await run_agent(endpoint(output_format="json", output_schema=SCHEMA), "Ada")
    assert result == {"name": "mock"} and state.iterations == 1


async def test_invalid_json_gets_one_corrective_reask():
    value = {"mock": {"answers": ["Here you go: name=Ada", '{"name": "Ada"}']}}
    result, state, _ = await run_agent(endpoint(output_format="json", output_schema=SCHEMA), value)
    assert result == {"name": "Ada"} and state.iterations == 2


async def test_json_that_is_invalid_twice_fails_with_invalid_output():
    value = {"mock": {"answers": ["nope", '{"name": 42}']}}
    with pytest.raises(UpstreamFailed) as failed:
        await run_agent(endpoint(output_format="json", output_schema=SCHEMA), value)
    assert failed.value.code == "invalid_output" and "name" in failed.value.message


async def test_a_huge_tool_result_is_clipped_for_the_model_and_more_for_the_record(fake_llm, llm_http, mcp_server):
    model = fake_llm.model(fake_llm.openai(calls=[("weather__dump", {"size": 300_000})]), fake_llm.openai("ok"))
    conn = Connection(llm_http, f"{fake_llm.url}/openai/v1", "sk-test")
    _, state, events = await run_agent(endpoint(llm_provider="openai", llm_model=model), "go", mcp_server.url, conn)
    sent = fake_llm.requests(model)[1].body["messages"][-1]["content"]  # '{"result":"xxx…' clipped
    assert MODEL_RESULT_CHARS <= len(sent) < MODEL_RESULT_CHARS + 100 and "[truncated: 3000" in sent
    kept = state.tool_calls[0].result
    assert RECORD_RESULT_CHARS <= len(kept) < RECORD_RESULT_CHARS + 100 and "[truncated: 3000" in kept
    assert events[2][1]["result"] == kept


async def test_earlier_turns_reach_the_model_between_the_system_prompt_and_the_input(fake_llm, llm_http):
    model = fake_llm.model(fake_llm.openai("Paris, still."))
    conn = Connection(llm_http, f"{fake_llm.url}/openai/v1", "sk-test")
    history = [ChatTurn(role="user", content="Capital of France?"), ChatTurn(role="assistant", content="Paris.")]
    ep = endpoint(llm_provider="openai", llm_model=model, system_prompt="Answer briefly.")
    result, _, _ = await run_agent(ep, "And now?", conn=conn, history=history)
    sent = [(m["role"], m["content"]) for m in fake_llm.requests(model)[0].body["messages"]]
    assert sent[0][0] == "system" and "Answer briefly." in sent[0][1]
    assert sent[1:] == [("user", "Capital of France?"), ("assistant", "Paris."), ("user", "And now?")]
    assert result == "Paris, still."
