"""The webhooks service process: its request handlers, event consumers and delivery loop, plus health and
metrics over HTTP."""

from __future__ import annotations

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from .broker import router
from .container import Webhooks

broker = make_broker(settings, "webhooks")
broker.include_router(router)

app = create_service_app(
    service="webhooks", settings=settings, broker=broker, container=Webhooks, title="Agentry webhooks"
)
