"""The `mock` development model: offline, deterministic, ~chars/4 tokens, JSON on demand, steerable."""

from __future__ import annotations

import pytest

from agentry_common.errors import UpstreamFailed
from agentry_runner.providers import PROVIDERS, ChatRequest, Message, ToolSpec

MOCK = PROVIDERS["mock"]
TOOL = ToolSpec("weather__forecast", "Forecast", {"type": "object"})


def request(content: str, **fields) -> ChatRequest:
    return ChatRequest(**{"model": "mock-1", "system": "sys", "messages": [Message("user", content)], "tools": [],
                          "max_tokens": 100, "temperature": 0.3, **fields})  # fmt: skip


async def test_same_input_gives_the_same_answer_with_tokens_about_chars_over_four():
    first = await MOCK.complete(request("What is the capital of France?"), None, 0)
    again = await MOCK.complete(request("What is the capital of France?"), None, 0)
    assert first == again
    assert first.text == "mock answer: What is the capital of France?"
    assert first.tokens_input == -(-len("sys" + "What is the capital of France?") // 4)
    assert first.tokens_output == -(-len(first.text) // 4)


async def test_json_mode_answers_an_object_that_fits_the_schema():
    schema = {
        "type": "object",
        "required": ["total", "currency", "items"],
        "properties": {
            "total": {"type": "number", "minimum": 1},
            "currency": {"enum": ["EUR", "USD"]},
            "items": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "paid": {"type": "boolean"},
        },
    }
    completion = await MOCK.complete(request("invoice", json_mode=True, output_schema=schema), None, 0)
    assert completion.text == '{"total":1,"currency":"EUR","items":["mock"],"paid":true}'
    plain = await MOCK.complete(request("invoice", json_mode=True), None, 0)
    assert plain.text == '{"answer":"invoice"}'


async def test_a_directive_makes_it_call_a_tool_then_answer_with_the_result():
    steer = '{"q": "Oslo?", "mock": {"tool": "weather__forecast", "arguments": {"city": "Oslo"}}}'
    first = await MOCK.complete(request(steer, tools=[TOOL]), None, 0)
    assert first.text == "" and [(c.name, c.arguments) for c in first.tool_calls] == [
        ("weather__forecast", {"city": "Oslo"})
    ]
    history = [
        Message("user", steer),
        Message("assistant", "", first.tool_calls),
        Message("tool", '{"sky":"sunny"}', tool_call_id=first.tool_calls[0].id, name="weather__forecast"),
    ]
    second = await MOCK.complete(request(steer, tools=[TOOL], messages=history), None, 0)
    assert second.tool_calls == [] and second.text == 'mock answer: {"sky":"sunny"}'
    forbidden = await MOCK.complete(request(steer, tools=[TOOL], allow_tools=False), None, 0)
    assert forbidden.tool_calls == []


async def test_scripted_answers_are_given_in_order():
    steer = '{"mock": {"answers": ["not json", "{\\"ok\\": true}"]}}'
    first = await MOCK.complete(request(steer), None, 0)
    history = [Message("user", steer), Message("assistant", first.text), Message("user", "again")]
    second = await MOCK.complete(request(steer, messages=history), None, 0)
    assert (first.text, second.text) == ("not json", '{"ok": true}')


@pytest.mark.parametrize("code", ["llm_auth_error", "llm_provider_error", "llm_timeout"])
async def test_it_can_be_told_to_fail(code):
    with pytest.raises(UpstreamFailed) as failed:
        await MOCK.complete(request(f'{{"mock": {{"fail": "{code}"}}}}'), None, 0)
    assert failed.value.code == code
