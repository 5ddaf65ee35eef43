"""Every HTTP provider maps failures the same way: 401/403 → llm_auth_error; 429/5xx retried with backoff
within the run's deadline, then llm_provider_error; a slow answer → llm_timeout. The message is fixed text
naming the provider and its status; the provider's own words travel apart, as `detail`, without any
fragment of the key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentry_common.errors import UpstreamFailed
from agentry_common.events import RunError
from agentry_runner.providers import PROVIDERS, ChatRequest, Connection, Message, ProviderFailed

KEY = "sk-secret-value-1234567890abcdef"
PROVIDER_PATHS = {
    "openai": "/openai/v1",
    "groq": "/groq/openai/v1",
    "custom": "/custom/v1",
    "anthropic": "/anthropic",
    "gemini": "/gemini",
}
pytestmark = pytest.mark.parametrize("provider", list(PROVIDER_PATHS))


def ok_reply(fake: Any, provider: str) -> Any:
    if provider == "anthropic":
        return fake.anthropic("fine")
    if provider == "gemini":
        return fake.gemini("fine")
    return fake.openai("fine")


async def complete(fake: Any, http: Any, provider: str, model: str, *, timeout_s: float = 10, deadline_s: float = 20):
    conn = Connection(
        http, fake.url + PROVIDER_PATHS[provider], KEY, timeout_s=timeout_s, max_retries=2, backoff_s=0.01
    )
    request = ChatRequest(model, "system", [Message("user", "hi")], [], 100, 0.3)
    return await PROVIDERS[provider].complete(request, conn, asyncio.get_running_loop().time() + deadline_s)


def fragments(key: str, n: int = 8) -> set[str]:
    return {key[i : i + n].lower() for i in range(len(key) - n + 1)}


def leaked(text: str, key: str = KEY) -> set[str]:
    return {f for f in fragments(key) if f in text.lower()}


@pytest.mark.parametrize("status", [401, 403])
async def test_a_rejected_key_is_an_auth_error_that_does_not_echo_the_key(fake_llm, llm_http, provider, status):
    echo = f"Incorrect API key provided: {KEY.upper()} (also known as {KEY[:-5]}…)"
    model = fake_llm.model(fake_llm.error(status, echo))
    with pytest.raises(ProviderFailed) as failed:
        await complete(fake_llm, llm_http, provider, model)
    assert failed.value.code == "llm_auth_error"
    assert failed.value.message == f"{provider} answered {status}"
    assert failed.value.detail.startswith("Incorrect API key provided: [redacted]")
    assert not leaked(failed.value.for_owner())
    assert len(fake_llm.requests(model)) == 1  # never retried


async def test_rate_limited_call_is_retried_then_succeeds(fake_llm, llm_http, provider):
    model = fake_llm.model(fake_llm.error(429, "slow down"), ok_reply(fake_llm, provider))
    completion = await complete(fake_llm, llm_http, provider, model)
    assert completion.text == "fine"
    assert len(fake_llm.requests(model)) == 2


async def test_a_retry_waits_as_long_as_the_provider_asks(fake_llm, llm_http, provider):
    model = fake_llm.model(fake_llm.error(429, "slow down", **{"Retry-After": "1"}), ok_reply(fake_llm, provider))
    started = asyncio.get_running_loop().time()
    completion = await complete(fake_llm, llm_http, provider, model)
    assert completion.text == "fine"
    assert asyncio.get_running_loop().time() - started >= 1.0  # not the 10 ms backoff: the provider's second


async def test_the_last_failure_says_how_many_attempts_were_made(fake_llm, llm_http, provider):
    model = fake_llm.model(fake_llm.error(502, "bad gateway"))
    with pytest.raises(ProviderFailed) as failed:
        await complete(fake_llm, llm_http, provider, model)
    assert failed.value.message == f"{provider} answered 502; gave up after 3 attempts"


async def test_server_errors_are_retried_then_reported_as_provider_error(fake_llm, llm_http, provider):
    model = fake_llm.model(fake_llm.error(500, "boom"))
    with pytest.raises(UpstreamFailed) as failed:
        await complete(fake_llm, llm_http, provider, model)
    assert failed.value.code == "llm_provider_error"
    assert len(fake_llm.requests(model)) == 3  # first try + max_retries


async def test_retries_stop_at_the_run_deadline(fake_llm, llm_http, provider):
    model = fake_llm.model(fake_llm.error(503, "busy", **{"Retry-After": "30"}))
    with pytest.raises(UpstreamFailed) as failed:
        await complete(fake_llm, llm_http, provider, model, deadline_s=2)
    assert failed.value.code == "llm_provider_error"
    assert len(fake_llm.requests(model)) == 1


async def test_a_provider_slower_than_the_llm_timeout_is_an_llm_timeout(fake_llm, llm_http, provider):
    reply = ok_reply(fake_llm, provider)
    reply.delay = 1.0
    model = fake_llm.model(reply)
    with pytest.raises(UpstreamFailed) as failed:
        await complete(fake_llm, llm_http, provider, model, timeout_s=0.2)
    assert failed.value.code == "llm_timeout"


async def test_a_refused_request_says_why_to_the_owner_only_without_the_key(fake_llm, llm_http, provider):
    model = fake_llm.model(fake_llm.error(400, f"model does not exist (key {KEY[3:20].upper()}, {KEY[-9:]})"))
    with pytest.raises(ProviderFailed) as failed:
        await complete(fake_llm, llm_http, provider, model)
    assert failed.value.code == "llm_provider_error"
    assert failed.value.message == f"{provider} answered 400"  # all a caller is told
    assert failed.value.detail == "model does not exist (key [redacted], [redacted])"
    owner = RunError(code=failed.value.code, message=failed.value.for_owner())
    assert "model does not exist" in owner.message and owner.for_caller().message == f"{provider} answered 400"
