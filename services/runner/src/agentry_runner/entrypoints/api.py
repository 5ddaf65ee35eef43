"""The runner process: the run consumer and request handlers, plus health, readiness and metrics over HTTP."""

from __future__ import annotations

from agentry_common.app import create_service_app
from agentry_common.broker import make_broker

from ..settings import settings
from .broker import router
from .container import Runner

broker = make_broker(settings, "runner")
broker.include_router(router)

app = create_service_app(service="runner", settings=settings, broker=broker, container=Runner, title="Agentry runner")
