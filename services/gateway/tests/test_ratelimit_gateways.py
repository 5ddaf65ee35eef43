"""Rate limits over HTTP, across three gateway processes sharing the session's NATS (issue #6's must-shows)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentry_dev.stack import Nats, Stack, free_port

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


@dataclass
class Gateways:
    urls: list[str]  # the session's gateway and two more, all on the session's NATS
    behind_proxy: str  # one of them, with TRUSTED_PROXIES=127.0.0.1/32 so tests can vary X-Forwarded-For


@pytest.fixture(scope="module")
def gateways(stack: Stack) -> Iterator[Gateways]:
    extra = [stack.start_service("gateway", wait=False), stack.start_service("gateway", TRUSTED_PROXIES="127.0.0.1/32")]
    try:
        extra[0].wait_ready()
        yield Gateways([stack.service("gateway").url, *(g.url for g in extra)], extra[1].url)
    finally:
        for gateway in extra:
            gateway.stop()
            stack.services.remove(gateway)


async def _post(url: str, path: str, headers: dict[str, str] | None = None, body: Any = "hello") -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await client.post(path, json={"input": body}, headers=headers or {})


def _is_refusal(r: httpx.Response, limit: int) -> bool:
    return (
        r.status_code == 429
        and r.json()["error"]["code"] == "rate_limited"
        and int(r.headers["Retry-After"]) >= 1
        and r.headers["X-RateLimit-Limit"] == str(limit)
        and r.headers["X-RateLimit-Remaining"] == "0"
    )


async def test_200_concurrent_runs_across_three_gateways_admit_exactly_60(
    gateways: Gateways, make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    key = {"X-API-Key": created["api_key"]}
    clients = [
        httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=100)) for url in gateways.urls
    ]
    try:
        responses = await asyncio.gather(
            *(clients[i % 3].post(created["run_url"], json={"input": "hi"}, headers=key) for i in range(200))
        )
    finally:
        for client in clients:
            await client.aclose()
    assert collections.Counter(r.status_code for r in responses) == {200: 60, 429: 140}
    assert all(_is_refusal(r, 60) for r in responses if r.status_code == 429)
    assert all(
        r.headers["X-RateLimit-Limit"] == "60" and "X-Run-Id" in r.headers for r in responses if r.status_code == 200
    )
    history = await http.get(f"/api/agent-endpoints/{created['endpoint']['id']}/runs?limit=100", headers=auth)
    assert len(history.json()["runs"]) == 60  # nothing was published for a refused request


async def test_a_public_endpoint_limits_each_client_address_within_the_endpoint_limit(
    gateways: Gateways, make_endpoint: EndpointFactory
) -> None:
    run_url = (await make_endpoint(auth_mode="public"))["run_url"]

    async def from_ip(ip: str, n: int) -> list[httpx.Response]:
        return await asyncio.gather(*(_post(gateways.behind_proxy, run_url, {"X-Forwarded-For": ip}) for _ in range(n)))

    assert [r.status_code for r in await from_ip("198.51.100.1", 20)] == [200] * 20
    over = await from_ip("198.51.100.1", 5)  # the 21st and after
    assert all(_is_refusal(r, 20) for r in over)
    assert "client address" in over[0].json()["error"]["message"]
    # Address A's refusals took nothing from the endpoint: B and C still get all of theirs, 60 in total.
    assert [r.status_code for r in await from_ip("198.51.100.2", 20)] == [200] * 20
    assert [r.status_code for r in await from_ip("2001:db8:0:7::1", 20)] == [200] * 20
    refused = await from_ip("198.51.100.4", 1)
    assert _is_refusal(refused[0], 60) and "per endpoint" in refused[0].json()["error"]["message"]


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_address(
    gateway_url: str, make_endpoint: EndpointFactory
) -> None:
    run_url = (await make_endpoint(auth_mode="public"))["run_url"]
    spoofed = [await _post(gateway_url, run_url, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(21)]
    assert [r.status_code for r in spoofed[:20]] == [200] * 20
    assert _is_refusal(spoofed[20], 20)  # all 21 counted against the socket peer, 127.0.0.1


async def test_every_run_response_carries_the_limit_and_a_bad_key_consumes_no_quota(
    gateway_url: str, make_endpoint: EndpointFactory
) -> None:
    created = await make_endpoint(input_schema={"type": "object"})
    for bad in ("aek_" + "x" * 40, "nonsense"):
        assert (await _post(gateway_url, created["run_url"], {"X-API-Key": bad}, {})).status_code == 401
    key = {"X-API-Key": created["api_key"]}
    ok = await _post(gateway_url, created["run_url"], key, {})
    assert ok.status_code == 200 and ok.headers["X-RateLimit-Remaining"] == "59"
    invalid = await _post(gateway_url, created["run_url"], key, "not an object")  # checked after the limit
    assert invalid.status_code == 422 and invalid.headers["X-RateLimit-Remaining"] == "58"
    for fields, status in (({"async_mode": True}, 202), ({"enable_streaming": True}, 200)):
        other = await make_endpoint(**fields)
        r = await _post(gateway_url, other["run_url"], {"X-API-Key": other["api_key"]})
        assert r.status_code == status and r.headers["X-RateLimit-Limit"] == "60", r.text
        assert r.headers["X-RateLimit-Remaining"] == "59" and 1 <= int(r.headers["X-RateLimit-Reset"]) <= 60


async def test_owner_test_runs_are_limited_to_10_a_minute_apart_from_live_runs(
    gateway_url: str, make_endpoint: EndpointFactory, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    path = f"/api/agent-endpoints/{created['endpoint']['id']}/test"
    responses = [await _post(gateway_url, path, auth) for _ in range(11)]
    assert [r.status_code for r in responses[:10]] == [200] * 10
    assert _is_refusal(responses[10], 10)
    live = await _post(gateway_url, created["run_url"], {"X-API-Key": created["api_key"]})
    assert live.headers["X-RateLimit-Remaining"] == "59"


async def test_with_nats_gone_a_gateway_refuses_runs_with_503_unless_configured_to_fail_open(
    stack: Stack, make_endpoint: EndpointFactory, tmp_path: Path
) -> None:
    run_url = (await make_endpoint(auth_mode="public"))["run_url"]
    own_nats = Nats(tmp_path / "nats", free_port())  # the session's NATS stays up for everyone else
    own_nats.start()
    env = {"NATS_URL": own_nats.url, "RATE_LIMIT_TIMEOUT_S": "0.5", "RPC_TIMEOUT_S": "0.5"}
    closed = stack.start_service("gateway", wait=False, **env)
    opened = stack.start_service("gateway", RATE_LIMIT_FAIL_OPEN="true", **env)
    try:
        closed.wait_ready()  # connected, streams declared; no runner listens on this NATS, so no run is tried
        own_nats.stop()
        refused = await _post(closed.url, run_url)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "rate_limiter_unavailable"
        # Failing open, the run gets past the limiter and is refused only by the broker being gone.
        admitted = await _post(opened.url, run_url)
        assert admitted.status_code == 503 and admitted.json()["error"]["code"] == "broker_unavailable"
        async with httpx.AsyncClient(base_url=closed.url) as client:
            metrics = (await client.get("/metrics")).text
        assert 'agentry_rate_limiter_unavailable_total{mode="fail_closed"} 1.0' in metrics
        assert closed.log_path
        for _ in range(50):  # the launcher copies the process's output to the log file from a thread
            if "rate limiter unavailable" in closed.log_path.read_text():
                break
            await asyncio.sleep(0.1)
        assert "rate limiter unavailable" in closed.log_path.read_text()
    finally:
        for gateway in (closed, opened):
            gateway.stop(kill=True)  # ours; a graceful stop would wait for the missing NATS
            stack.services.remove(gateway)
        own_nats.stop()
