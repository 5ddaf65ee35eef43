"""Gemini generateContent with function calling, against a fake speaking that wire format."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace

from google.genai._api_client import GOOGLE_AI_API_DEFAULT_VERSION

from agentry_runner.providers import PROVIDERS, ChatRequest, Connection, Message, ToolRequest, ToolSpec

TOOL = ToolSpec("weather__forecast", "Forecast", {"type": "object", "properties": {"city": {"type": "string"}}})


async def test_function_call_round_trip_with_usage(fake_llm, llm_http):
    model = fake_llm.model(
        fake_llm.gemini(calls=[("weather__forecast", {"city": "Oslo"})], usage=(50, 10)),
        fake_llm.gemini("Sunny in Oslo.", usage=(70, 5)),
    )
    conn = Connection(llm_http, f"{fake_llm.url}/gemini", "gm-test")
    deadline = asyncio.get_running_loop().time() + 10
    request = ChatRequest(model, "Be brief.", [Message("user", "Weather in Oslo?")], [TOOL], 256, 0.2)

    first = await PROVIDERS["gemini"].complete(request, conn, deadline)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("weather__forecast", {"city": "Oslo"})]
    assert (first.tokens_input, first.tokens_output) == (50, 10)

    call = first.tool_calls[0]
    history = [
        *request.messages,
        Message("assistant", first.text, first.tool_calls, raw=first.raw, provider="gemini"),
        Message("tool", '{"sky":"sunny"}', tool_call_id=call.id, name=call.name),
    ]
    second = await PROVIDERS["gemini"].complete(replace(request, messages=history), conn, deadline)
    assert second.text == "Sunny in Oslo."

    sent = fake_llm.requests(model)
    # The SDK's default API version, the key in its header (never `?key=`): the fake refuses anything else.
    assert sent[0].path == f"/gemini/{GOOGLE_AI_API_DEFAULT_VERSION}/models/{model}:generateContent"
    assert sent[0].headers["x-goog-api-key"] == "gm-test"
    assert sent[0].body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    declaration = {"name": "weather__forecast", "description": "Forecast", "parametersJsonSchema": TOOL.parameters}
    assert sent[0].body["tools"] == [{"functionDeclarations": [declaration]}]
    assert sent[0].body["generationConfig"] == {"maxOutputTokens": 256, "temperature": 0.2}
    model_turn, response_turn = sent[1].body["contents"][-2:]
    assert model_turn == {"role": "model", "parts": first.raw}  # thought signature travels back
    assert base64.b64decode(model_turn["parts"][0]["thoughtSignature"]) == b"sig0"
    assert response_turn == {"role": "user", "parts": [
        {"functionResponse": {"name": "weather__forecast", "response": {"result": '{"sky":"sunny"}'}}}]}  # fmt: skip


async def test_an_invalid_key_reported_as_400_is_an_auth_error(fake_llm, llm_http):
    from agentry_common.errors import UpstreamFailed

    reply = fake_llm.error(400, "API key not valid. Please pass a valid API key.")
    reply.error_details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    model = fake_llm.model(reply)
    conn = Connection(llm_http, f"{fake_llm.url}/gemini", "gm-bad")
    request = ChatRequest(model, "", [Message("user", "hi")], [], 100, 0.3)
    try:
        await PROVIDERS["gemini"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    except UpstreamFailed as err:
        assert err.code == "llm_auth_error"
    else:
        raise AssertionError("expected an auth error")


async def test_spent_tool_budget_sets_function_calling_mode_none(fake_llm, llm_http):
    model = fake_llm.model(fake_llm.gemini("done"))
    conn = Connection(llm_http, f"{fake_llm.url}/gemini", "gm-test")
    request = ChatRequest(f"models/{model}", "", [Message("user", "hi")], [TOOL], 100, 0.3, allow_tools=False)
    await PROVIDERS["gemini"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    assert fake_llm.requests(model)[0].body["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


async def test_a_failed_tool_and_json_mode_are_sent_as_the_sdk_has_them(fake_llm, llm_http):
    model = fake_llm.model(fake_llm.gemini('{"ok": true}'))
    conn = Connection(llm_http, f"{fake_llm.url}/gemini", "gm-test")
    history = [
        Message("user", "go"),
        Message("assistant", "", [ToolRequest("gemini-0-t__x", "t__x", {"a": 1})], provider="openai"),
        Message("tool", "error: broke", tool_call_id="gemini-0-t__x", name="t__x", is_error=True),
    ]
    request = ChatRequest(model, "", history, [], 100, 0.3, json_mode=True)
    completion = await PROVIDERS["gemini"].complete(request, conn, asyncio.get_running_loop().time() + 10)
    assert completion.text == '{"ok": true}'
    body = fake_llm.requests(model)[0].body  # the fake held it against the SDK's types
    assert body["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "t__x", "args": {"a": 1}}}]}
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "t__x", "response": {"error": "error: broke"}}}
    ]
    assert body["generationConfig"]["responseMimeType"] == "application/json"
