from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from agentry_dev.stack import Stack

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def workspace(http: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any]:
    r = await http.post("/api/workspaces", json={"name": "Acme"}, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json()["workspace"])


@pytest.fixture
def make_endpoint(http: httpx.AsyncClient, auth: dict[str, str], workspace: dict[str, Any]) -> EndpointFactory:
    """Create an endpoint (mock model by default); returns the whole 201 body (endpoint, api_key, run_url)."""

    async def _make(**fields: Any) -> dict[str, Any]:
        body = {
            "name": "Invoice parser",
            "workspace_id": workspace["id"],
            "system_prompt": "Extract the invoice.",
            "llm_provider": "mock",
            **fields,
        }
        r = await http.post("/api/agent-endpoints", json=body, headers=auth)
        assert r.status_code == 201, r.text
        return dict(r.json())

    return _make


@pytest.fixture(scope="module")
def three_gateways(stack: Stack) -> Iterator[list[str]]:
    """The session's gateway and two more processes on the same NATS and database: three replicas."""
    extra = [stack.start_service("gateway", wait=False) for _ in range(2)]
    try:
        for gateway in extra:
            gateway.wait_ready()
        yield [stack.service("gateway").url, *(g.url for g in extra)]
    finally:
        for gateway in extra:
            gateway.stop()
            stack.services.remove(gateway)
