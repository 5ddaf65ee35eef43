"""The webhooks service process: its request handlers, event consumers and delivery loop, plus health and
metrics over HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker
from agentry_common.secrets import SecretCache

from ..settings import settings
from .broker import engine, router, scheduler

broker = make_broker(settings, "webhooks")
broker.include_router(router)


async def start_delivering(_: FastAPI) -> None:
    secrets = SecretCache(
        broker.connection, rpc_timeout_s=settings.rpc_timeout_s, ttl_s=settings.secret_cache_ttl_s,
        max_entries=settings.secret_cache_size,
    )  # fmt: skip
    await secrets.start()  # a deleted webhook's secret leaves memory on the keys service's secrets.changed
    scheduler.start(secrets)


async def stop_delivering(_: FastAPI) -> None:
    await scheduler.stop()


app = create_service_app(
    service="webhooks",
    settings=settings,
    broker=broker,
    engine=engine,
    on_startup=start_delivering,
    on_shutdown=stop_delivering,
    title="Agentry webhooks",
)
