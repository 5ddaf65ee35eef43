"""Pytest plugin: real NATS + PostgreSQL + the five services, started once per test session.

Servers get random ports and a temporary data folder; services log to `<data>/logs` so tests (and the
secrets scan) can read what they printed. Tests isolate themselves by using fresh user ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from nats.aio.client import Client

from agentry_common.subjects import SERVICES

from .servers import free_port
from .stack import Stack, dev_token


@pytest.fixture(scope="session")
def servers() -> Iterator[Stack]:
    """NATS and PostgreSQL, migrated; no services yet."""
    data = Path(tempfile.mkdtemp(prefix="agentry-test-"))
    stack = Stack(
        data,
        nats_port=free_port(),
        pg_port=free_port(),
        fast_pg=True,
        echo=bool(os.environ.get("AGENTRY_TEST_ECHO")),
        extra_env={
            "ENVIRONMENT": "test",
            "ALLOW_PRIVATE_URLS": "true",
            # Webhook retries in seconds rather than a day, so tests can watch a delivery retry and give up.
            "WEBHOOK_RETRY_BASE_S": "0.25",
            "WEBHOOK_RETRY_WINDOW_S": "5",
            "WEBHOOK_POLL_S": "0.2",
            "WEBHOOK_PURGE_S": "0.5",
            "KEY_EXPIRY_SWEEP_S": "0.5",  # `key.expiring` within a second of a key's expiry coming into the week
        },
    )
    stack.start_servers()
    stack.migrate()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack(servers: Stack) -> Stack:
    """The whole system: the five services, each its own process, on the session's servers."""
    # AGENTRY_TEST_SERVICES=keys,gateway narrows the system while one service is being developed.
    wanted = os.environ.get("AGENTRY_TEST_SERVICES", ",".join(SERVICES)).split(",")
    for name in (n for n in SERVICES if n in wanted):
        if name not in servers.primary:
            servers.primary[name] = servers.start_service(name, wait=False)
    for svc in servers.primary.values():
        svc.wait_ready()
    return servers


@pytest.fixture(scope="session")
def gateway_url(stack: Stack) -> str:
    return stack.service("gateway").url


@pytest.fixture
async def http(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        yield client


@pytest.fixture
def user() -> str:
    """A fresh user id, so each test has its own workspaces, endpoints and wallet."""
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev_token(user)}"}


@pytest.fixture
def make_auth() -> Callable[..., dict[str, str]]:
    def _make(sub: str, role: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {dev_token(sub, role)}"}

    return _make


@pytest.fixture
async def nc(servers: Stack) -> AsyncIterator[Client]:
    client = await nats.connect(servers.nats_url)
    try:
        yield client
    finally:
        await client.drain()


Stop = Callable[[], Awaitable[None]]


async def serve_asgi(app: Any, port: int | None = None, **config: Any) -> tuple[str, Stop]:
    """Serve an ASGI app (a fake provider, an MCP server) on loopback in the running loop: its base URL and an
    async `stop`. `port`: one chosen beforehand (else a free one); `config`: more of uvicorn's `Config`."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it could not start: say why
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="session")
def serve_app() -> Callable[[Any], Awaitable[tuple[str, Stop]]]:
    """`await serve_app(asgi_app)` → (base URL, async stop), for test modules (they cannot import helpers)."""
    return serve_asgi
