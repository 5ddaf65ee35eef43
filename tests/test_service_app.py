"""What `create_service_app` gives every service beyond FastAPI: a settled heap once started, and a front door
that sees HTTP requests before FastAPI's own layers."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from faststream.nats import NatsBroker

from agentry_common.app import GC_THRESHOLDS, ServiceApp, create_service_app
from agentry_common.container import ServiceContainer
from agentry_common.settings import ServiceSettings
from agentry_dev.stack import Stack


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def make_app(nats_url: str) -> ServiceApp:
    settings = ServiceSettings(nats_url=nats_url)
    return create_service_app(
        service="probe", settings=settings, broker=NatsBroker(nats_url), container=ServiceContainer
    )


@pytest.mark.usefixtures("restore_gc")
async def test_a_started_service_has_moved_its_startup_objects_out_of_the_collectors_sight(servers: Stack) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # Python's defaults
    app = make_app(servers.nats_url)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000  # the modules, classes and functions a service is made of
        assert gc.get_threshold() == GC_THRESHOLDS
        # What a request leaves behind is still collected: a reference cycle is freed by the next collection.
        cycle: list[Any] = []
        cycle.append(cycle)
        gc.collect()  # anything else pending goes first; the cycle is still referenced
        del cycle
        assert gc.collect() >= 1


async def test_the_front_door_sees_http_requests_first_and_hands_the_rest_to_fastapi(servers: Stack) -> None:
    app = make_app(servers.nats_url)
    seen: list[str] = []

    def front(behind: Any) -> Any:
        async def door(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(scope["path"])
            if scope["path"] == "/front":
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await behind(scope, receive, send)

        return door

    app.set_front(front)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://probe") as client:
        assert (await client.get("/front")).status_code == 204
        health = await client.get("/healthz")  # FastAPI's own route, behind the door
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert (await client.get("/nowhere")).status_code == 404
    assert seen == ["/front", "/healthz", "/nowhere"]
