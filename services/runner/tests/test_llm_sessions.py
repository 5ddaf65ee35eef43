"""The LLM sessions are shared by every owner's runs, so they keep no cookies: one that an upstream set during
one run is never sent with the next (over real HTTP, both sessions)."""

from __future__ import annotations

from typing import Any

import pytest

from agentry_runner.providers.http import guarded_session, platform_session


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
