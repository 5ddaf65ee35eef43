"""A client that sends its request head a byte a second loses its connection after HEADER_READ_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agentry_dev.stack import Service, Stack

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[Service]:
    svc = stack.start_service("gateway", HEADER_READ_TIMEOUT_S=str(TIMEOUT_S))
    try:
        yield svc
    finally:
        svc.stop()
        stack.services.remove(svc)


async def _open(svc: Service) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", svc.port)


async def test_a_request_head_sent_a_byte_a_second_is_cut_off(gateway: Service) -> None:
    reader, writer = await _open(gateway)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    started = time.monotonic()
    closed_after: float | None = None
    try:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), timeout=1.0) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue  # still open: the next byte, a second later
    except ConnectionError:
        closed_after = time.monotonic() - started
    finally:
        writer.close()
    assert closed_after is not None, "the slow client kept its connection for the whole head"
    assert closed_after < len(head) / 2  # closed long before the head could complete


async def test_a_prompt_client_keeps_its_connection_across_requests(gateway: Service) -> None:
    reader, writer = await _open(gateway)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), timeout=10)
            assert answer.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(TIMEOUT_S + 0.5)  # idle between requests is the keep-alive timeout's business
    finally:
        writer.close()
