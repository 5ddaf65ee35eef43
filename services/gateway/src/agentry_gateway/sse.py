"""Server-sent events as the gateway sends them, through sse-starlette.

The frames are the ones clients have always read: `\\n` line ends, no keep-alive pings (a run's progress
and, on `/v1`, its comments keep the connection busy; SDKs and tests read every frame), `Cache-Control:
no-cache`. sse-starlette adds `X-Accel-Buffering: no` (so a proxy passes frames on at once) and
`Connection: keep-alive`.

A stream ends with its run, within the run's timeout, so a gateway that shuts down lets it finish like any
other request (uvicorn's graceful timeout still bounds it) instead of cutting it: sse-starlette's own drain,
which cancels every stream at SIGTERM, is off.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import AppStatus

SEP = "\n"

AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]


def event(data: str, name: str | None = None) -> ServerSentEvent:
    """`event: <name>` (if any) and `data: <data>`; `data` must be one line (compact JSON is)."""
    return ServerSentEvent(data, event=name, sep=SEP)


def comment(text: str) -> ServerSentEvent:
    """`: <text>`, which SSE clients skip and people watching with curl see."""
    return ServerSentEvent(comment=text, sep=SEP)


def response(frames: AsyncIterable[ServerSentEvent], headers: Mapping[str, str]) -> EventSourceResponse:
    return EventSourceResponse(frames, headers={**headers, "Cache-Control": "no-cache"}, ping=0, sep=SEP)
