"""The LLM sessions, over real HTTP: shared by every owner's runs, they keep no cookies (one that an upstream set
during one run is never sent with the next); a platform provider's calls go through the environment's proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentry_runner.providers import PROVIDERS, ChatRequest, Connection, Message
from agentry_runner.providers.http import env_proxy, guarded_session, platform_session


class CookieSetter:
    """An upstream that sets a cookie on every answer and records the cookies it was sent."""

    def __init__(self) -> None:
        self.sent: list[str | None] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        self.sent.append(headers.get(b"cookie", b"").decode() or None)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"set-cookie", b"session=tenant-a; Path=/"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize("make", [platform_session, lambda: guarded_session(allow_private=True)])
async def test_a_cookie_an_upstream_sets_is_not_sent_back(serve_app: Any, make: Any) -> None:
    upstream = CookieSetter()
    url, stop = await serve_app(upstream)
    url = url.replace("127.0.0.1", "localhost")  # a host name: a jar keeps no cookies of an IP address anyway
    try:
        async with make() as session:
            for _ in range(2):
                async with session.post(f"{url}/v1/chat/completions", data=b"{}") as resp:
                    assert resp.status == 200 and "session" in resp.headers.get("set-cookie", "")
    finally:
        await stop()
    assert upstream.sent == [None, None]


async def test_a_platform_provider_goes_through_the_proxy_the_environment_names(
    fake_llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy (`HTTP_PROXY`/`HTTPS_PROXY`, `NO_PROXY`) is read once per base URL, with aiohttp's own rules, and
    the call goes through it: here the fake provider plays the proxy for a host that does not exist."""
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_llm.url)
    env_proxy.cache_clear()
    try:
        base_url = "http://llm.invalid/openai/v1"
        proxy, _ = env_proxy(base_url)
        assert str(proxy) == fake_llm.url
        model = fake_llm.model(fake_llm.openai("through the proxy"))
        async with platform_session() as session:
            conn = Connection(session, base_url, "sk-test", proxy=proxy)
            request = ChatRequest(model, "system", [Message("user", "hi")], [], 100, 0.3)
            done = await PROVIDERS["openai"].complete(request, conn, asyncio.get_running_loop().time() + 10)
        assert done.text == "through the proxy"
        assert fake_llm.requests(model)[0].headers["host"] == "llm.invalid"  # the request the proxy was asked for
        monkeypatch.setenv("NO_PROXY", "llm.invalid")
        env_proxy.cache_clear()
        assert env_proxy(base_url) == (None, None)
    finally:
        env_proxy.cache_clear()
