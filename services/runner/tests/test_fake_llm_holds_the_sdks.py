"""The fake providers refuse what the official SDKs would not send: the old Anthropic format (API version
2023-06-01, `x-api-key`, `temperature`), undeclared keys at any depth, Gemini's old version or unknown fields.
Without this, a drift of our adapters from the SDKs would pass unnoticed."""

from __future__ import annotations

from typing import Any

import pytest

OLD_ANTHROPIC = {"model": "m", "max_tokens": 10, "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}
CASES: list[tuple[str, dict[str, str], dict[str, Any], list[str]]] = [
    (
        "/anthropic/v1/messages",
        {"x-api-key": "k", "anthropic-version": "2023-06-01"},
        OLD_ANTHROPIC,
        ["credentials sent as ['x-api-key']", "anthropic-version '2023-06-01'", "body.temperature: not a field"],
    ),
    (
        "/openai/v1/chat/completions",
        {"authorization": "Bearer k"},
        {"model": "m", "messages": [{"role": "tool", "tool_call_id": "c", "content": "x", "name": "t"}]},
        ["body.messages[0].name: not a field of ChatCompletionToolMessageParam"],
    ),
    (
        "/gemini/v1beta/models/m:generateContent",
        {"x-goog-api-key": "k"},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generation_config_typo": {}},
        ["API version v1beta", "body.generation_config_typo: not a generateContent field"],
    ),
]


@pytest.mark.parametrize(("path", "headers", "body", "expected"), CASES)
async def test_a_request_the_sdk_would_not_send_is_refused_and_recorded(
    fake_llm, llm_http, path, headers, body, expected
):
    async with llm_http.post(fake_llm.url + path, json=body, headers=headers) as resp:
        assert resp.status == 400
    drift, fake_llm.drift = fake_llm.drift, []  # recorded (it would fail the test), then cleared: it was meant
    for problem in expected:
        assert any(problem in d for d in drift), (problem, drift)
