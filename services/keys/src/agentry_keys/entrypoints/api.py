"""The keys service process: its broker handlers plus health, readiness and metrics over HTTP."""

from __future__ import annotations

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from .broker import router
from .container import Keys

broker = make_broker(settings, "keys")
broker.include_router(router)

app = create_service_app(service="keys", settings=settings, broker=broker, container=Keys, title="Agentry keys")
