"""The runner process: the run consumer and request handlers, plus health, readiness and metrics over HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from .broker import Runtime, engine, router

broker = make_broker(settings, "runner")
broker.include_router(router)


async def on_startup(_: FastAPI) -> None:
    await Runtime.start(broker.connection)


async def on_shutdown(_: FastAPI) -> None:
    await Runtime.stop()


app = create_service_app(
    service="runner",
    settings=settings,
    broker=broker,
    engine=engine,
    on_startup=on_startup,
    on_shutdown=on_shutdown,
    title="Agentry runner",
)
