"""The billing service process: wallet request handlers and the charge consumer, plus health and metrics."""

from __future__ import annotations

from fastapi import FastAPI

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from .broker import engine, publisher, router, sessions
from .consumer import ChargeConsumer
from .spend import holds
from .spend import router as spend_router

broker = make_broker(settings, "billing")
broker.include_router(router)
broker.include_router(spend_router)
consumer = ChargeConsumer(settings, sessions, publisher)


async def start_charging(_: FastAPI) -> None:
    await publisher.start(broker.connection)
    await consumer.start(broker.connection)
    await holds.start(broker.connection)


async def stop_charging(_: FastAPI) -> None:
    await holds.stop()
    await consumer.stop()


app = create_service_app(
    service="billing",
    settings=settings,
    broker=broker,
    engine=engine,
    on_startup=start_charging,
    on_shutdown=stop_charging,
    title="Agentry billing",
)
