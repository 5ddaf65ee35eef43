"""The billing service process: wallet request handlers and the charge consumer, plus health and metrics."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from . import payments, usage
from .broker import engine, publisher, router, sessions
from .consumer import ChargeConsumer
from .spend import holds
from .spend import router as spend_router

broker = make_broker(settings, "billing")
broker.include_router(router)
broker.include_router(payments.router)
broker.include_router(spend_router)
broker.include_router(usage.router)
# Auto-recharge needs Stripe: in manual mode the charge batch does not even look for thresholds crossed.
stripe_mode = settings.payment_mode == "stripe"
consumer = ChargeConsumer(settings, sessions, publisher, on_recharges=payments.start_recharges if stripe_mode else None)
_stopping = asyncio.Event()
_background: list[asyncio.Task[None]] = []


async def start_charging(_: FastAPI) -> None:
    await publisher.start(broker.connection)
    await consumer.start(broker.connection)
    await holds.start(broker.connection)
    if stripe_mode:
        _background.append(asyncio.create_task(payments.retry_recharges(_stopping)))


async def stop_charging(_: FastAPI) -> None:
    _stopping.set()
    await holds.stop()
    await consumer.stop()
    await asyncio.gather(*_background, return_exceptions=True)


app = create_service_app(
    service="billing",
    settings=settings,
    broker=broker,
    engine=engine,
    on_startup=start_charging,
    on_shutdown=stop_charging,
    title="Agentry billing",
)
