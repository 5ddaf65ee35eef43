"""Caller keys over HTTP (issue #16): many keys per endpoint, each revoked, expired or rotated alone, and the change
seen by every gateway replica within a second, without a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def replicas(three_gateways: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in three_gateways]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def _run(client: httpx.AsyncClient, run_url: str, key: str) -> httpx.Response:
    return await client.post(run_url, json={"input": "hi"}, headers={"X-API-Key": key})


async def _codes(replicas: list[httpx.AsyncClient], run_url: str, key: str) -> list[Any]:
    answers = await asyncio.gather(*(_run(c, run_url, key) for c in replicas))
    return [r.status_code if r.status_code == 200 else (r.status_code, r.json()["error"]["code"]) for r in answers]


async def _all_refuse_within(
    replicas: list[httpx.AsyncClient], run_url: str, key: str, code: str, seconds: float = 1.0
) -> float:
    """Ask every replica until all answer 401 `code`; how long that took (the test fails past `seconds`)."""
    started = time.monotonic()
    while True:
        codes = await _codes(replicas, run_url, key)
        if codes == [(401, code)] * len(replicas):
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, codes
        await asyncio.sleep(0.05)


async def _new_key(http: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str, **fields: Any) -> dict[str, Any]:
    r = await http.post(f"/api/agent-endpoints/{endpoint_id}/keys", json={"name": "acme", **fields}, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_two_keys_revoke_one_and_it_fails_on_every_replica_while_the_other_works(
    replicas: list[httpx.AsyncClient], make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    endpoint_id, run_url, default = created["endpoint"]["id"], created["run_url"], created["api_key"]
    second = await _new_key(http, auth, endpoint_id)
    assert second["api_key"].startswith("aek_") and second["key"]["name"] == "acme"
    assert second["key"]["id"].startswith("key_") and second["api_key"].startswith(second["key"]["prefix"])
    # Both work everywhere (and every replica now has both verdicts cached).
    assert await _codes(replicas, run_url, default) == [200] * 3
    assert await _codes(replicas, run_url, second["api_key"]) == [200] * 3

    r = await http.delete(f"/api/agent-endpoints/{endpoint_id}/keys/{second['key']['id']}", headers=auth)
    assert r.status_code == 204
    await _all_refuse_within(replicas, run_url, second["api_key"], "invalid_api_key")
    assert await _codes(replicas, run_url, default) == [200] * 3

    listed = (await http.get(f"/api/agent-endpoints/{endpoint_id}/keys", headers=auth)).json()["keys"]
    assert [k["name"] for k in listed] == ["default", "acme"]
    assert listed[0]["revoked_at"] is None and listed[1]["revoked_at"] is not None  # kept, for audit
    assert second["api_key"] not in str(listed) and default not in str(listed)  # the raw key only when issued


async def test_an_expired_key_answers_401_api_key_expired_on_every_replica(
    replicas: list[httpx.AsyncClient], make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    expires = datetime.now(UTC) + timedelta(seconds=3)
    key = await _new_key(http, auth, created["endpoint"]["id"], expires_at=expires.isoformat())
    assert await _codes(replicas, created["run_url"], key["api_key"]) == [200] * 3  # cached, with its expiry
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()))
    await _all_refuse_within(replicas, created["run_url"], key["api_key"], "api_key_expired")
    assert await _codes(replicas, created["run_url"], created["api_key"]) == [200] * 3


async def test_regenerate_with_a_grace_period_keeps_the_old_key_until_it_ends_on_every_replica(
    replicas: list[httpx.AsyncClient], make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    endpoint_id, run_url, old = created["endpoint"]["id"], created["run_url"], created["api_key"]
    assert await _codes(replicas, run_url, old) == [200] * 3
    r = await http.post(f"/api/agent-endpoints/{endpoint_id}/regenerate-key", json={"grace_seconds": 3}, headers=auth)
    assert r.status_code == 200, r.text
    new, ends = r.json()["api_key"], time.monotonic() + 3
    assert await _codes(replicas, run_url, old) == [200] * 3  # still within its grace period
    assert await _codes(replicas, run_url, new) == [200] * 3
    await asyncio.sleep(max(0.0, ends - time.monotonic()))
    await _all_refuse_within(replicas, run_url, old, "invalid_api_key")
    assert await _codes(replicas, run_url, new) == [200] * 3
    # Without a body the seed's meaning holds: the replaced key fails at once; a revoked default is recreated.
    listed = (await http.get(f"/api/agent-endpoints/{endpoint_id}/keys", headers=auth)).json()["keys"]
    live = [k for k in listed if k["revoked_at"] is None]
    assert [k["name"] for k in live] == ["default"]
    await http.delete(f"/api/agent-endpoints/{endpoint_id}/keys/{live[0]['id']}", headers=auth)
    recreated = (await http.post(f"/api/agent-endpoints/{endpoint_id}/regenerate-key", headers=auth)).json()["api_key"]
    assert await _codes(replicas, run_url, recreated) == [200] * 3
    await _all_refuse_within(replicas, run_url, new, "invalid_api_key")


async def test_keys_are_their_owners_alone_and_bad_fields_are_named(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str], make_auth: Any
) -> None:
    endpoint_id = (await make_endpoint())["endpoint"]["id"]
    key = await _new_key(http, auth, endpoint_id, rate_limit_per_minute=5, spend_cap_cents=0)
    stranger = make_auth("someone-else")
    base = f"/api/agent-endpoints/{endpoint_id}/keys"
    for method, path, body in (
        ("GET", base, None),
        ("POST", base, {"name": "mine"}),
        ("PATCH", f"{base}/{key['key']['id']}", {"name": "mine"}),
        ("DELETE", f"{base}/{key['key']['id']}", None),
    ):
        r = await http.request(method, path, json=body, headers=stranger)
        assert r.status_code == 404 and r.json()["error"]["code"] == "endpoint_not_found", (method, r.text)
    for bad, field in (
        ({"name": ""}, "name"),
        ({"name": "x" * 61}, "name"),
        ({"name": "a", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "a", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"name": "a", "spend_cap_cents": "5"}, "spend_cap_cents"),
        ({"name": "a", "spend_cap_cents": 100_000_001}, "spend_cap_cents"),
        ({"name": "a", "spend_cap_period": "week"}, "spend_cap_period"),
    ):
        r = await http.post(base, json=bad, headers=auth)
        assert r.status_code == 422 and field in r.json()["error"]["message"], (bad, r.text)
    regenerate = f"/api/agent-endpoints/{endpoint_id}/regenerate-key"
    r = await http.post(regenerate, json={"grace_seconds": 86401}, headers=auth)
    assert r.status_code == 422 and "grace_seconds" in r.text

    patched = await http.patch(f"{base}/{key['key']['id']}", json={"name": "acme eu", "rate_limit_per_minute": None},
                               headers=auth)  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert patched.json()["key"]["name"] == "acme eu" and patched.json()["key"]["rate_limit_per_minute"] is None
    assert patched.json()["key"]["spend_cap_cents"] == 0 and "api_key" not in patched.json()
    r = await http.patch(f"{base}/key_nope", json={"name": "x"}, headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"


async def test_last_used_at_follows_a_keys_runs_without_a_write_per_run(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    endpoint_id = created["endpoint"]["id"]
    key = await _new_key(http, auth, endpoint_id)
    assert key["key"]["last_used_at"] is None
    before = datetime.now(UTC)
    for _ in range(3):
        assert (await _run(http, created["run_url"], key["api_key"])).status_code == 200
    deadline = time.monotonic() + 30
    while True:  # gateways report uses in batches, a few seconds apart
        listed = (await http.get(f"/api/agent-endpoints/{endpoint_id}/keys", headers=auth)).json()["keys"]
        used = {k["id"]: k["last_used_at"] for k in listed}
        if used[key["key"]["id"]] is not None:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.25)
    at = datetime.fromisoformat(used[key["key"]["id"]])
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)


async def _verifications(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    line = 'agentry_gateway_key_verifications_total{outcome="valid",source="keys_service"}'
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


async def test_a_burst_of_a_new_keys_runs_asks_the_keys_service_once(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    key = await _new_key(http, auth, created["endpoint"]["id"])
    before = await _verifications(http)
    answers = await asyncio.gather(*(_run(http, created["run_url"], key["api_key"]) for _ in range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert await _verifications(http) - before == 1
