"""Anthropic Messages API with tool use, against a fake speaking that wire format."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import anthropic._constants

from agentry_runner.providers import PROVIDERS, ChatRequest, Connection, Message, ToolRequest, ToolSpec

TOOL = ToolSpec("weather__forecast", "Forecast", {"type": "object", "properties": {"city": {"type": "string"}}})


async def test_tool_use_round_trip_with_usage(fake_llm, llm_http):
    model = fake_llm.model(
        fake_llm.anthropic("Let me check.", calls=[("weather__forecast", {"city": "Oslo"})], usage=(40, 12)),
        fake_llm.anthropic("Sunny in Oslo.", usage=(60, 6)),
    )
    conn = Connection(llm_http, f"{fake_llm.url}/anthropic", "sk-ant-test")
    deadline = asyncio.get_running_loop().time() + 10
    request = ChatRequest(model, "Be brief.", [Message("user", "Weather in Oslo?")], [TOOL], 256, 1.7)

    first = await PROVIDERS["anthropic"].complete(request, conn, deadline)
    assert first.text == "Let me check."
    assert first.tool_calls == [ToolRequest("toolu_0", "weather__forecast", {"city": "Oslo"})]
    assert (first.tokens_input, first.tokens_output) == (40, 12)

    history = [
        *request.messages,
        Message("assistant", first.text, first.tool_calls, raw=first.raw, provider="anthropic"),
        Message("tool", '{"sky":"sunny"}', tool_call_id="toolu_0", name="weather__forecast"),
    ]
    second = await PROVIDERS["anthropic"].complete(replace(request, messages=history), conn, deadline)
    assert second.text == "Sunny in Oslo."

    sent = fake_llm.requests(model)
    assert sent[0].path == "/anthropic/v1/messages"
    # What the current SDK sends (the fake refuses anything else): its API version, the key as a bearer token.
    assert sent[0].headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert sent[0].headers["authorization"] == "Bearer sk-ant-test" and "x-api-key" not in sent[0].headers
    assert sent[0].body["system"] == "Be brief."
    assert "temperature" not in sent[0].body  # the current MessageCreateParams has none
    assert sent[0].body["tool_choice"] == {"type": "auto"}
    assert sent[0].body["tools"] == [
        {"name": "weather__forecast", "description": "Forecast", "input_schema": TOOL.parameters}
    ]
    assistant, results = sent[1].body["messages"][-2:]
    assert assistant == {"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_0", "name": "weather__forecast", "input": {"city": "Oslo"}},
    ]}  # fmt: skip
    assert results == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_0", "content": '{"sky":"sunny"}'}]}  # fmt: skip


async def test_parallel_tool_results_travel_in_one_user_turn_and_errors_are_flagged(fake_llm, llm_http):
    model = fake_llm.model(fake_llm.anthropic("ok"))
    conn = Connection(llm_http, f"{fake_llm.url}/anthropic", "k")
    calls = [ToolRequest("a", "t__x", {}), ToolRequest("b", "t__y", {})]
    history = [
        Message("user", "go"),
        Message("assistant", "", calls, provider="openai"),  # from another provider: rebuilt, not replayed
        Message("tool", "1", tool_call_id="a", name="t__x"),
        Message("tool", "error: broke", tool_call_id="b", name="t__y", is_error=True),
    ]
    request = ChatRequest(model, "", history, [], 100, 0.3, allow_tools=False)
    await PROVIDERS["anthropic"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    body = fake_llm.requests(model)[0].body
    assert "system" not in body
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "a", "name": "t__x", "input": {}},
        {"type": "tool_use", "id": "b", "name": "t__y", "input": {}},
    ]
    assert body["messages"][2]["content"][1]["is_error"] is True
    assert len(body["messages"]) == 3
