"""A caller key's own rate limit and spend cap, exact across three gateway replicas, and runs by key in history
(issue #16)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def replicas(three_gateways: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=100)
    clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in three_gateways]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def _new_key(http: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str, **fields: Any) -> dict[str, Any]:
    r = await http.post(f"/api/agent-endpoints/{endpoint_id}/keys", json={"name": "acme", **fields}, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _burst(replicas: list[httpx.AsyncClient], run_url: str, key: str, n: int, body: Any = "hi") -> list[Any]:
    return list(
        await asyncio.gather(
            *(replicas[i % 3].post(run_url, json={"input": body}, headers={"X-API-Key": key}) for i in range(n))
        )
    )


async def test_a_keys_own_limit_admits_exactly_n_of_2n_across_three_replicas_and_takes_nothing_from_others(
    replicas: list[httpx.AsyncClient], make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    limited = await _new_key(http, auth, created["endpoint"]["id"], rate_limit_per_minute=7)
    answers = await _burst(replicas, created["run_url"], limited["api_key"], 14)
    assert collections.Counter(r.status_code for r in answers) == {200: 7, 429: 7}
    refused = [r for r in answers if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert all(r.headers["X-RateLimit-Limit"] == "7" for r in refused)
    assert "7 runs for this API key per minute" in refused[0].json()["error"]["message"]
    # The refused seven took no endpoint slots: the default key has the endpoint's 60 less the 7 admitted.
    r = await replicas[0].post(created["run_url"], json={"input": "hi"}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == str(60 - 8)


async def test_history_shows_and_filters_runs_by_key(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint()
    endpoint_id = created["endpoint"]["id"]
    second = await _new_key(http, auth, endpoint_id)
    keys = (await http.get(f"/api/agent-endpoints/{endpoint_id}/keys", headers=auth)).json()["keys"]
    default_id = keys[0]["id"]
    for key in (created["api_key"], second["api_key"], second["api_key"]):
        r = await http.post(created["run_url"], json={"input": "hi"}, headers={"X-API-Key": key})
        assert r.status_code == 200
    assert (await http.post(f"/api/agent-endpoints/{endpoint_id}/test", json={"input": "t"}, headers=auth)).is_success
    runs = f"/api/agent-endpoints/{endpoint_id}/runs"
    everything = (await http.get(runs, headers=auth)).json()["runs"]
    assert sorted(str(r["key_id"]) for r in everything) == sorted(
        [default_id, second["key"]["id"], second["key"]["id"], "None"]
    )
    assert next(r for r in everything if r["is_test"])["key_id"] is None
    by_second = (await http.get(runs, params={"key_id": second["key"]["id"], "limit": 1}, headers=auth)).json()
    assert [r["key_id"] for r in by_second["runs"]] == [second["key"]["id"]] and by_second["next_cursor"]
    rest = await http.get(runs, params={"key_id": second["key"]["id"], "cursor": by_second["next_cursor"]},
                          headers=auth)  # fmt: skip
    assert [r["key_id"] for r in rest.json()["runs"]] == [second["key"]["id"]]
    assert rest.json()["next_cursor"] is None


async def _spent(http: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str, key_id: str) -> int:
    r = await http.get(f"/api/agent-endpoints/{endpoint_id}/keys/{key_id}", headers=auth)
    assert r.status_code == 200, r.text
    return int(r.json()["key"]["spent_cents"])


async def test_a_spend_cap_is_never_passed_by_50_concurrent_priced_runs_on_three_replicas(
    replicas: list[httpx.AsyncClient], make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint(price_per_run_cents=7)
    endpoint_id = created["endpoint"]["id"]
    capped = await _new_key(http, auth, endpoint_id, spend_cap_cents=100, spend_cap_period="day")
    assert capped["key"]["spent_cents"] == 0
    answers = await _burst(replicas, created["run_url"], capped["api_key"], 50)
    assert collections.Counter(r.status_code for r in answers) == {200: 14, 402: 36}  # 14 * 7 = 98 <= 100
    refused = next(r for r in answers if r.status_code == 402)
    assert refused.json()["error"]["code"] == "key_spend_cap_reached" and "100" in refused.json()["error"]["message"]
    # What billing charged (collected or not) for the key's runs stays within the cap.
    history = (await http.get(f"/api/agent-endpoints/{endpoint_id}/runs?limit=100", headers=auth)).json()["runs"]
    assert len(history) == 14  # a refused run was never started
    assert sum(r["charge"]["amount_cents"] for r in history) == 98
    assert await _spent(http, auth, endpoint_id, capped["key"]["id"]) == 98
    # Another key of the endpoint is not held back by this one's cap.
    r = await replicas[1].post(created["run_url"], json={"input": "hi"}, headers={"X-API-Key": created["api_key"]})
    assert r.status_code == 200


async def test_a_failed_run_gives_its_hold_back_and_raising_the_cap_lets_runs_in_again(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint(price_per_run_cents=10)
    endpoint_id = created["endpoint"]["id"]
    capped = await _new_key(http, auth, endpoint_id, spend_cap_cents=10)
    key_id, headers = capped["key"]["id"], {"X-API-Key": capped["api_key"]}
    failing = {"input": {"mock": {"fail": "llm_provider_error"}}}
    assert (await http.post(created["run_url"], json=failing, headers=headers)).status_code == 502
    deadline = time.monotonic() + 30
    while await _spent(http, auth, endpoint_id, key_id) != 0:  # billing releases the hold when it sees run.failed
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await http.post(created["run_url"], json={"input": "a"}, headers=headers)).status_code == 200
    over = await http.post(created["run_url"], json={"input": "b"}, headers=headers)
    assert over.status_code == 402 and over.json()["error"]["code"] == "key_spend_cap_reached"
    r = await http.patch(f"/api/agent-endpoints/{endpoint_id}/keys/{key_id}", json={"spend_cap_cents": 20},
                         headers=auth)  # fmt: skip
    assert r.status_code == 200 and r.json()["key"]["spent_cents"] == 10
    assert (await http.post(created["run_url"], json={"input": "c"}, headers=headers)).status_code == 200


async def test_a_run_the_endpoints_window_refuses_hands_its_keys_slot_back(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str], nc: Any
) -> None:
    """A key's slot is taken first (the narrower scope), so a run its endpoint then refuses gives it back (a
    message delete on the limiter's stream, which the gateway's NATS user may do there and nowhere else): the
    refusal costs the key nothing."""
    from agentry_gateway.ratelimit.decision import subject_token

    created = await make_endpoint()
    endpoint_id = created["endpoint"]["id"]
    key = await _new_key(http, auth, endpoint_id, rate_limit_per_minute=100)
    js = nc.jetstream()
    for _ in range(60):  # the endpoint's window (60 a minute in tests) filled by other callers
        await js.publish(f"ratelimit.endpoint.{subject_token(endpoint_id)}", b"")
    r = await http.post(created["run_url"], json={"input": "hi"}, headers={"X-API-Key": key["api_key"]})
    assert r.status_code == 429 and "endpoint" in r.json()["error"]["message"], r.text
    key_subject = f"ratelimit.key.l100.{subject_token(key['key']['id'])}"
    info = await js.stream_info("RATELIMIT_KEY_100", subjects_filter=key_subject)
    assert not info.state.subjects  # taken, then handed back
