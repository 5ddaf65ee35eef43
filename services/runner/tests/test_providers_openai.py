"""OpenAI-compatible chat completions (openai, groq, custom) against a fake speaking that wire format."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson

from agentry_runner.providers import PROVIDERS, ChatRequest, Connection, Message, ToolRequest, ToolSpec

TOOL = ToolSpec("weather__forecast", "Forecast", {"type": "object", "properties": {"city": {"type": "string"}}})


async def test_tool_call_round_trip_with_usage(fake_llm, llm_http):
    model = fake_llm.model(
        fake_llm.openai(calls=[("weather__forecast", {"city": "Oslo"})], usage=(20, 5)),
        fake_llm.openai("Sunny in Oslo.", usage=(31, 4)),
    )
    conn = Connection(llm_http, f"{fake_llm.url}/openai/v1", "sk-test")
    deadline = asyncio.get_running_loop().time() + 10
    request = ChatRequest(model, "Be brief.", [Message("user", "Weather in Oslo?")], [TOOL], 256, 0.2)

    first = await PROVIDERS["openai"].complete(request, conn, deadline)
    assert first.tool_calls == [ToolRequest("call_0", "weather__forecast", {"city": "Oslo"})]
    assert (first.tokens_input, first.tokens_output) == (20, 5)

    history = [
        *request.messages,
        Message("assistant", first.text, first.tool_calls, raw=first.raw, provider="openai"),
        Message("tool", '{"sky":"sunny"}', tool_call_id="call_0", name="weather__forecast"),
    ]
    second = await PROVIDERS["openai"].complete(replace(request, messages=history), conn, deadline)
    assert second.text == "Sunny in Oslo." and second.tool_calls == []
    assert (second.tokens_input, second.tokens_output) == (31, 4)

    sent = fake_llm.requests(model)
    assert sent[0].path == "/openai/v1/chat/completions"
    assert sent[0].headers["authorization"] == "Bearer sk-test"
    assert sent[0].body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent[0].body["tools"] == [{"type": "function", "function": {
        "name": "weather__forecast", "description": "Forecast", "parameters": TOOL.parameters}}]  # fmt: skip
    assert sent[0].body["tool_choice"] == "auto"
    assert sent[0].body["max_completion_tokens"] == 256
    assistant, tool = sent[1].body["messages"][-2:]
    assert assistant["tool_calls"][0]["function"] == {"name": "weather__forecast", "arguments": '{"city":"Oslo"}'}
    assert tool == {"role": "tool", "tool_call_id": "call_0", "content": '{"sky":"sunny"}'}


async def test_spent_tool_budget_keeps_tools_declared_but_forbids_calls(fake_llm, llm_http):
    model = fake_llm.model(fake_llm.openai("done"))
    conn = Connection(llm_http, f"{fake_llm.url}/groq/openai/v1", "gsk-test")
    request = ChatRequest(model, "", [Message("user", "hi")], [TOOL], 100, 0.3, allow_tools=False)
    await PROVIDERS["groq"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    body = fake_llm.requests(model)[0].body
    assert body["tool_choice"] == "none" and body["tools"]
    assert body["max_tokens"] == 100  # groq and custom servers take the classic field


async def test_json_mode_asks_for_a_json_object_when_no_tools_are_declared(fake_llm, llm_http):
    model = fake_llm.model(fake_llm.openai('{"a": 1}'))
    conn = Connection(llm_http, f"{fake_llm.url}/openai/v1", "sk-test")
    request = ChatRequest(model, "Answer JSON.", [Message("user", "hi")], [], 100, 0.3, json_mode=True)
    await PROVIDERS["openai"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    assert fake_llm.requests(model)[0].body["response_format"] == {"type": "json_object"}
    array = ChatRequest(
        model, "", [Message("user", "hi")], [], 100, 0.3, json_mode=True, output_schema={"type": "array"}
    )
    await PROVIDERS["openai"].complete(array, conn, asyncio.get_running_loop().time() + 10)
    assert "response_format" not in fake_llm.requests(model)[1].body  # json_object would forbid an array


async def test_custom_sends_no_authorization_without_a_key_and_flags_bad_arguments(fake_llm, llm_http):
    reply = fake_llm.openai(calls=[("t", {})])
    reply.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    model = fake_llm.model(reply)
    conn = Connection(llm_http, f"{fake_llm.url}/custom/v1/", None)
    request = ChatRequest(model, "", [Message("user", "hi")], [], 100, 0.3)
    completion = await PROVIDERS["custom"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    assert "authorization" not in fake_llm.requests(model)[0].headers
    assert completion.tool_calls[0].arguments_error is not None
    assert orjson.loads(orjson.dumps(completion.tool_calls[0].arguments)) == {}
