"""HTTP request telemetry for every service: Prometheus counters and latency by route template, and a server
span per request when tracing is on.

A pure ASGI middleware (not Starlette's `BaseHTTPMiddleware`): the handler runs in the same task, so the
request's span is the current one when the gateway publishes `run.requested`, and a streamed response is
timed until its last byte. Routes are labelled by their template (`/api/run/{slug}`), never the raw path,
so a label's values stay few; a request no route matched is `unmatched`.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.metrics import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import tracing
from .metrics import HTTP_LATENCY, HTTP_REQUESTS

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
# Probes and scrapes are counted but not traced: they would bury the runs in the trace store.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (set on the scope by the router), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestTelemetry:
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

        span, token = None, None
        if tracing.enabled() and scope["path"] not in UNTRACED:
            span = tracing.tracer.start_span(
                method, context=tracing.context_from(_trace_headers(scope)), kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": scope["path"]},
            )  # fmt: skip
            token = context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_of(scope)
            self._observe(route, method, status, time.perf_counter() - started)
            if span is not None and token is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
                context.detach(token)

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


def _trace_headers(scope: Scope) -> dict[str, Any]:
    """A caller's own W3C trace context, so a run joins the trace of whoever called the gateway."""
    found: dict[str, Any] = {}
    for name, value in scope["headers"]:
        if name in (b"traceparent", b"tracestate"):
            found[name.decode()] = value.decode("latin-1")
    return found
