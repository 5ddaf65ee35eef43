from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on loopback: a real HTTP server that records what it is sent and answers each
    request with the next status of `script` (then 200)."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> Response:
        self.got.append(Received({k.lower(): v for k, v in request.headers.items()}, await request.body()))
        self.arrived.set()
        status = self.script.pop(0) if self.script else 200
        return Response(status_code=status)

    async def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got


@pytest.fixture
async def receiver(serve_app: Callable[[Any], Awaitable[tuple[str, Any]]]) -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = Starlette(routes=[Route("/hook", recv.handle, methods=["POST"])])
    base, stop = await serve_app(app)
    recv.url = f"{base}/hook"
    try:
        yield recv
    finally:
        await stop()
