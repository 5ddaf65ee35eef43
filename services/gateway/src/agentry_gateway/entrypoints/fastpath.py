"""`POST /api/run/{slug}` without FastAPI's per-request machinery, for the requests that need none of it.

Every run passes through this route, and FastAPI's routing, middleware layers and dependency solving cost
~0.2 ms of CPU per request on the development machine — as much as the rest of the gateway's own work on a
run. This front door (`ServiceApp.set_front`: it sees each request before FastAPI does, so not even FastAPI's
own outer layers run for a run) serves a well-formed run request itself: it reads the JSON body, validates it with the
route's own model and calls the route's own handler (`runs.run_endpoint`), and renders errors with the same
handlers the app installs. Anything else goes to the app unchanged, with the body replayed: a body that is not
a JSON object, fails validation, is too large or is not `application/json`; a slug that is unstorable; and
every request while tracing is on (FastAPI makes the HTTP server span). So each 4xx the app gives — and the
OpenAPI document — stays the app's own.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentry_common import tracing
from agentry_common.app import error_response
from agentry_common.telemetry import RequestMetrics

from ..schemas import RunBody, unstorable
from . import runs

PREFIX = "/api/run/"
ROUTE = "/api/run/{slug}"
_JSON = (b"application/json", b"application/json; charset=utf-8")
_ROUTE = SimpleNamespace(path=ROUTE)


class RunFastPath:
    def __init__(self, app: ASGIApp, fastapi: FastAPI, max_bytes: int):
        self.app = app
        self.fastapi = fastapi
        self.max_bytes = max_bytes
        self.metered = RequestMetrics(self._serve, service="gateway")

    def _eligible(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or tracing.enabled():
            return False
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return False
        slug = path[len(PREFIX) :]
        if not slug or "/" in slug or unstorable(slug):
            return False
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        return content_type.lower() in _JSON

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._eligible(scope):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: there is no one to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        replay = _replay(raw, more, receive)
        body: RunBody | None = None
        if not more and size <= self.max_bytes:
            try:
                # The standard library's parser, as FastAPI's: orjson would read an integer beyond 64 bits as a
                # float, which the model accepts, where FastAPI's int is refused (422).
                data = json.loads(raw)
                body = RunBody.model_validate(data) if isinstance(data, dict) else None
            except (ValueError, ValidationError, RecursionError):  # not JSON, not UTF-8, nested too deeply,
                body = None  # or not a valid run body
        if body is None:  # too large, or not a valid run body: the app answers (413, 422) as always
            return await self.app(scope, replay, send)
        scope["route"] = _ROUTE  # what the metrics read for their route label, as the router would set it
        scope["fastpath.body"] = body
        await self.metered(scope, replay, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in (b"authorization", b"x-api-key"):
                headers.setdefault(name, value)  # the first of repeated headers, as FastAPI's Header() takes
        authorization, x_api_key = headers.get(b"authorization"), headers.get(b"x-api-key")
        response: Response
        try:
            response = await runs.run_endpoint(
                slug=scope["path"][len(PREFIX) :],
                body=scope.pop("fastpath.body"),
                request=Request(scope, receive),
                gw=self.fastapi.state.container,
                authorization=authorization.decode("latin-1") if authorization is not None else None,
                x_api_key=x_api_key.decode("latin-1") if x_api_key is not None else None,
            )
        except Exception as err:  # rendered exactly as the app's own handlers render it
            response = error_response(err)
        await response(scope, receive, send)


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A `receive` that gives back the body read so far as one message, then continues with the real one."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
