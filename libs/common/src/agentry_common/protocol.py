"""uvicorn's httptools protocol with a deadline on the request head (`HEADER_READ_TIMEOUT_S`).

uvicorn times out an idle keep-alive connection, but not one that is sending its request line and headers: a
client that sends a byte a second keeps its connection (and a slot of the server) as long as it likes. Here a
connection must complete each request head within the deadline, counted from the connection's opening for the
first request and from the request's first byte for later ones, or it is closed. The body is not covered: the
application reads it, under its own size limit.

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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
