"""A response's head and body leave in one socket write (`agentry_common.protocol`), and holding the head back
never makes a streamed response wait for its application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentry_common.protocol import HttpToolsProtocol, _OneWrite


class Recording:
    """The socket's side of a transport: what was written, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


async def test_a_head_and_its_body_are_one_write() -> None:
    sock = Recording()
    one = _OneWrite(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    one.write(b"HTTP/1.1 200 OK\r\n\r\n")
    one.write(b"body")
    assert sock.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    one.write(b"more")  # a streamed body's next chunk goes as it comes
    await asyncio.sleep(0)
    assert sock.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]
    assert one.get_extra_info("peername") == "extra:peername"  # the rest is the transport's


async def test_a_head_alone_leaves_on_the_next_turn_of_the_loop() -> None:
    sock = Recording()
    one = _OneWrite(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    one.write(b"head")
    assert sock.writes == []
    await asyncio.sleep(0)
    assert sock.writes == [b"head"]
    one.write(b"body")
    assert sock.writes == [b"head", b"body"]


async def test_closing_sends_a_held_head_first_and_a_gone_client_gets_nothing() -> None:
    sock = Recording()
    one = _OneWrite(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    one.write(b"head")
    one.close()
    assert sock.writes == [b"head"] and sock.closed
    gone = Recording()
    late = _OneWrite(gone, asyncio.get_running_loop())  # type: ignore[arg-type]
    late.write(b"head")
    gone.closed = True
    await asyncio.sleep(0)
    assert gone.writes == []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await RELEASE.wait()  # the body exists only once the client has seen the head
        await send({"type": "http.response.body", "body": b"later", "more_body": False})
        return
    body = f"hello {scope['path']}".encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [*headers, (b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


RELEASE = asyncio.Event()


@pytest.fixture
async def server(serve_app: Any) -> AsyncIterator[int]:
    url, stop = await serve_app(app, http=HttpToolsProtocol)
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        await stop()


async def test_answers_on_a_kept_alive_connection_are_whole(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        for path in ("/a", "/b"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head
            assert (
                await asyncio.wait_for(reader.readexactly(len(f"hello {path}")), timeout=5) == f"hello {path}".encode()
            )
    finally:
        writer.close()


async def test_a_streamed_head_reaches_the_client_before_its_body_exists(server: int) -> None:
    global RELEASE
    RELEASE = asyncio.Event()
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
        RELEASE.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), timeout=5) == b"5\r\nlater\r\n0\r\n\r\n"
    finally:
        writer.close()
