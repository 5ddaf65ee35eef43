"""The gateway process: public HTTP API on top of the shared service shell."""

from __future__ import annotations

import orjson
from fastapi import Depends
from fastapi.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker
from agentry_common.errors import PayloadTooLarge

from ..console import install as install_console
from ..settings import settings
from . import broker as bus
from . import keys, management, openai_compat, payments, runs, usage, wallet, webhooks
from .container import Gateway
from .deps import storable_params
from .fastpath import RunFastPath

broker = make_broker(settings, "gateway")
broker.include_router(bus.router)


class BodyLimit:
    """Refuse bodies over the configured size with 413 before anything reads them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await _too_large(self.max_bytes, scope, receive, send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"request body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
    err = PayloadTooLarge(f"request body is larger than {max_bytes} bytes", code="payload_too_large")
    if scope["path"].startswith("/v1/"):  # the OpenAI-compatible API answers in OpenAI's error shape
        return await openai_compat.openai_error(err)(scope, receive, send)
    body = orjson.dumps(err.body())
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = create_service_app(
    service="gateway",
    settings=settings,
    broker=broker,
    container=Gateway,
    title="Agentry",
    version="0.1.0",
    description="Turn an LLM agent into a metered, billable HTTP endpoint.",
)


@app.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    """The front page is the owner console (the API's documentation stays at `/docs`)."""
    return RedirectResponse("/console/", status_code=302)


install_console(app, settings)


for router in (
    management.router,
    keys.router,
    runs.router,
    wallet.router,
    payments.router,
    usage.router,
    webhooks.router,
    openai_compat.router,
):
    app.include_router(router, dependencies=[Depends(storable_params)])
app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
# In front of FastAPI: a well-formed run request skips FastAPI's own layers, routing, dependencies and the two
# middlewares above (it enforces the same body limit and records the same metrics itself).
app.set_front(lambda behind: RunFastPath(behind, fastapi=app, max_bytes=settings.max_body_bytes))
