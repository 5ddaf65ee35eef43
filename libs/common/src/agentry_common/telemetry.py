"""HTTP request metrics for every service: Prometheus counters and latency histograms by route template.

A pure ASGI middleware (not Starlette's `BaseHTTPMiddleware`, which runs the app in another task): a streamed
response is timed until its last byte. Routes are labelled by their template (`/api/run/{slug}`), never the
raw path, so a label's values stay few; a request no route matched is `unmatched`.

HTTP server spans are FastAPI's own (its native OpenTelemetry support, active only once `tracing` installs a
tracer provider); `UNTRACED` keeps probes and scrapes out of them.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import HTTP_LATENCY, HTTP_REQUESTS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# Probes and scrapes are counted but not traced: they would bury the runs in the trace store.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """FastAPI's `telemetry.exclude`: no spans for probes and scrapes."""
    return scope.get("path") in UNTRACED


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (set on the scope by the router), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    def __init__(self, app: ASGIApp, service: str):
        self.app = app
        self.service = service
        # Label children resolved once per (route, method[, status]): `labels()` takes a lock and builds a key.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._latencies: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        status = 500  # unless a response starts: an exception escaping the app becomes a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._observe(route_of(scope), method, status, time.perf_counter() - started)

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counter = self._counters.get((route, method, status))
        if counter is None:
            counter = self._counters[(route, method, status)] = HTTP_REQUESTS.labels(
                self.service, route, method, str(status)
            )
        counter.inc()
        latency = self._latencies.get((route, method))
        if latency is None:
            latency = self._latencies[(route, method)] = HTTP_LATENCY.labels(self.service, route, method)
        latency.observe(seconds)
