"""Which requests the run fast path takes, in process: the rest reach the app with their body intact.
(That its answers equal the app's is shown over HTTP in tests/test_run_fastpath.py.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agentry_gateway.entrypoints.fastpath import RunFastPath

LIMIT = 1024


class App:
    """The app behind the fast path: records what reached it and the body it could read."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.got.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(
    path: str, chunks: list[bytes], content_type: bytes = b"application/json", method: str = "POST"
) -> tuple[App, int]:
    app = App()
    # No gateway behind it: a request the fast path takes ends in its 500, never in the app.
    fast = RunFastPath(app, fastapi=SimpleNamespace(state=SimpleNamespace(container=None)), max_bytes=LIMIT)  # type: ignore[arg-type]
    scope = {"type": "http", "method": method, "path": path, "headers": [(b"content-type", content_type)],
             "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "scheme": "http",
             "root_path": "", "app": None}  # fmt: skip
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await fast(scope, receive, send)
    return app, sent[0]["status"]


async def test_a_well_formed_run_request_is_served_by_the_fast_path() -> None:
    app, status = await call("/api/run/my-agent", [b'{"input": ', b'"hi"}'])
    assert app.got == [] and status == 500  # taken (and failed for want of a gateway)


@pytest.mark.parametrize(
    ("path", "chunks", "content_type", "method"),
    [
        ("/api/run/my-agent", [b'{"input": 5}'], b"application/json", "POST"),  # invalid: the app's 422
        ("/api/run/my-agent", [b"[1]"], b"application/json", "POST"),
        ("/api/run/my-agent", [b'{"input": "x"'], b"application/json", "POST"),
        ("/api/run/my-agent", [b'{"input": "' + b"x" * LIMIT + b'"}'], b"application/json", "POST"),  # the app's 413
        ("/api/run/my-agent", [b'{"input": "x', b"x" * LIMIT, b'"}'], b"application/json", "POST"),
        ("/api/run/my-agent", [b'{"input": "hi"}'], b"text/plain", "POST"),
        ("/api/run/my-agent", [b'{"input": "hi"}'], b"application/agentry+json", "POST"),
        ("/api/run/my-agent/x", [b'{"input": "hi"}'], b"application/json", "POST"),
        ("/api/run/", [b'{"input": "hi"}'], b"application/json", "POST"),
        ("/api/run/a\x00b", [b'{"input": "hi"}'], b"application/json", "POST"),
        ("/api/run/my-agent", [b""], b"application/json", "GET"),
        ("/api/agent-endpoints", [b'{"input": "hi"}'], b"application/json", "POST"),
    ],
)
async def test_everything_else_reaches_the_app_with_its_body(path, chunks, content_type, method) -> None:
    app, status = await call(path, chunks, content_type, method)
    assert status == 299
    assert app.got == [(path, b"".join(chunks))]
