"""uvicorn's httptools protocol with a deadline on the request head (`HEADER_READ_TIMEOUT_S`), and a response's
head and body in one socket write.

uvicorn times out an idle keep-alive connection, but not one that is sending its request line and headers: a
client that sends a byte a second keeps its connection (and a slot of the server) as long as it likes. Here a
connection must complete each request head within the deadline, counted from the connection's opening for the
first request and from the request's first byte for later ones, or it is closed. The body is not covered: the
application reads it, under its own size limit.

uvicorn writes a response's head as soon as the app sends it and its body as a second write: two sends, and on
loopback two wake-ups of the client, for every answer (~30 µs of the server's CPU per response here, see
docs/benchmarks.md). The head is held until the body follows in the same turn of the event loop, or until the
loop's next turn (a streamed response's head, a 100 Continue) — it never waits for the application.

Every service's command line names this class (`--http agentry_common.protocol:HttpToolsProtocol`).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from pydantic import Field
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base

from .settings import ServiceSettings

NAME = "agentry_common.protocol:HttpToolsProtocol"


class _Settings(ServiceSettings):
    header_read_timeout_s: float = Field(
        10.0, gt=0, description="Close a connection whose request head is not complete within this time."
    )


@functools.cache
def header_read_timeout_s() -> float:
    return _Settings().header_read_timeout_s


class HttpToolsProtocol(_Base):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(header_read_timeout_s(), self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a later request on a kept-alive connection: its own deadline from its first byte

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self.cycle.transport = _OneWrite(self.transport, self.loop)  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _OneWrite:
    """The transport as one response cycle sees it: its first write (the head) is held until the next write
    (the body) joins it, or until the event loop's next turn, whichever comes first; order is kept."""

    __slots__ = ("_flush", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._flush is None:  # the cycle's first write
            self._held, self._flush = data, self._loop.call_soon(self.flush)
            return
        if self._held is not None:
            data, self._held = self._held + data, None
            self._flush.cancel()
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():  # the client left: nothing more to say to it
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
