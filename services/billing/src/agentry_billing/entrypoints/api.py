"""The billing service process: wallet request handlers and the charge consumer, plus health and metrics."""

from __future__ import annotations

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from . import payments, spend, usage
from .broker import router
from .container import Billing

broker = make_broker(settings, "billing")
broker.include_router(router)
broker.include_router(payments.router)
broker.include_router(spend.router)
broker.include_router(usage.router)

app = create_service_app(
    service="billing", settings=settings, broker=broker, container=Billing, title="Agentry billing"
)
