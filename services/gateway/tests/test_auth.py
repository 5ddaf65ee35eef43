"""API-key auth across gateway replicas: rotation, revocation broadcast, and the keys service's outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from nats.aio.client import Client

from agentry_common import subjects
from agentry_common.requests import VerifiedKey, VerifyKey
from agentry_common.rpc import call
from agentry_dev.stack import Stack

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


async def _run(url: str, run_url: str, key: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post(run_url, json={"input": "hello"}, headers={"X-API-Key": key})


async def test_old_key_fails_on_every_gateway_within_a_second_after_regenerate(
    stack: Stack, http: httpx.AsyncClient, auth: dict[str, str], make_endpoint: EndpointFactory
) -> None:
    second = stack.start_service("gateway")
    try:
        gateways = [stack.service("gateway").url, second.url]
        created = await make_endpoint()
        old = created["api_key"]
        for url in gateways:  # both replicas now hold a cached verdict for the old key
            r = await _run(url, created["run_url"], old)
            assert r.status_code == 200, r.text
        r = await http.post(f"/api/agent-endpoints/{created['endpoint']['id']}/regenerate-key", headers=auth)
        assert r.status_code == 200
        new = r.json()["api_key"]
        assert new != old and new.startswith("aek_")
        for url in gateways:
            deadline = time.monotonic() + 1.0
            status = 0
            while time.monotonic() < deadline:
                status = (await _run(url, created["run_url"], old)).status_code
                if status == 401:
                    break
                await asyncio.sleep(0.05)
            assert status == 401, f"old key still accepted by {url}"
            assert (await _run(url, created["run_url"], new)).status_code == 200
    finally:
        second.stop()
        stack.services.remove(second)


async def test_keys_restart_loses_nothing_and_gateway_says_503_while_keys_is_down(
    stack: Stack, nc: Client, make_endpoint: EndpointFactory, gateway_url: str
) -> None:
    created = await make_endpoint()
    keys = stack.service("keys")
    keys.stop()
    try:
        r = await _run(gateway_url, created["run_url"], "aek_" + "x" * 43)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "service_unavailable"
        assert "keys" in r.json()["error"]["message"]
    finally:
        keys.start()
        keys.wait_ready()
    verdict = await call(nc, subjects.KEYS_VERIFY, VerifyKey(api_key=created["api_key"]), VerifiedKey)
    assert verdict.endpoint_id == created["endpoint"]["id"]


async def test_public_endpoint_needs_no_key_and_api_key_endpoint_refuses_a_missing_one(
    make_endpoint: EndpointFactory, gateway_url: str
) -> None:
    public = await make_endpoint(auth_mode="public")
    private = await make_endpoint()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        assert (await client.post(public["run_url"], json={"input": "hi"})).status_code == 200
        r = await client.post(private["run_url"], json={"input": "hi"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = await client.post(private["run_url"], json={"input": "hi"}, headers={"X-API-Key": public["api_key"]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        bearer = {"Authorization": f"Bearer {private['api_key']}"}
        assert (await client.post(private["run_url"], json={"input": "hi"}, headers=bearer)).status_code == 200


async def test_a_gateway_forgets_revocations_once_no_verification_can_still_be_under_way(nc: Client) -> None:
    """Every revoked endpoint left an entry for the life of the process; now only recent ones stay."""
    from agentry_gateway.auth import KeyVerifier
    from agentry_gateway.settings import Settings

    verifier = KeyVerifier(nc, Settings(rpc_timeout_s=0.1))  # a verification ends within 0.1 s
    for endpoint_id in ("aep_old_1", "aep_old_2"):
        verifier.revoked(endpoint_id)
    await asyncio.sleep(1.2)
    verifier.revoked("aep_new")
    assert set(verifier._revoked_at) == {"aep_new"}
