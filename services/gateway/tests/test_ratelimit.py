"""Rate limits: exact sliding windows shared through NATS by every gateway replica (issue #6)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from agentry_common.errors import RateLimited, ServiceUnavailable
from agentry_common.stack import Nats, Stack, free_port
from agentry_gateway.ratelimit import Decision, Limits, Window, client_key, seconds_until, tighter

EndpointFactory = Callable[..., Awaitable[dict[str, Any]]]
LimitsFactory = Callable[..., Awaitable[Limits]]

# --- the window math, pure --------------------------------------------------------------------------

windows = st.floats(min_value=0.5, max_value=3600, allow_nan=False)


@given(at=st.floats(-1e4, 1e4), now=st.floats(-1e4, 1e4), window_s=windows)
def test_waits_are_whole_seconds_never_zero_and_never_beyond_the_window(at: float, now: float, window_s: float) -> None:
    wait = seconds_until(at, now, window_s)
    assert 1 <= wait <= math.ceil(window_s)
    if 1 <= at - now <= math.ceil(window_s):
        assert now + wait >= at > now + wait - 1  # a retry after `wait` seconds is never early, and not a second late


@given(limit=st.integers(1, 100), count=st.integers(0, 100), age=st.floats(0, 1), window_s=windows)
def test_a_window_reports_remaining_and_when_the_next_slot_frees(
    limit: int, count: int, age: float, window_s: float
) -> None:
    now = 1_000_000.0
    window = Window(limit, window_s, min(count, limit), now - age * window_s if count else None)
    decision = window.decision(now)
    assert decision.remaining == limit - min(count, limit)
    assert 1 <= decision.reset_s <= math.ceil(window_s)
    if count < limit:
        assert window.next_slot_in(now) == 1
    else:
        assert window.next_slot_in(now) == seconds_until(now - age * window_s + window_s, now, window_s)


@given(st.lists(st.builds(Decision, st.integers(1, 60), st.integers(0, 60), st.integers(1, 60)), min_size=1))
def test_the_tighter_scope_is_the_one_with_fewest_remaining(decisions: list[Decision]) -> None:
    chosen = tighter(decisions)
    assert chosen.remaining == min(d.remaining for d in decisions)
    assert chosen.reset_s == max(d.reset_s for d in decisions if d.remaining == chosen.remaining)


native_v6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None)  # mapped ones count as IPv4


@given(a=native_v6, b=native_v6)
def test_ipv6_clients_share_a_limit_per_64_prefix(a: Any, b: Any) -> None:
    assert (client_key(str(a)) == client_key(str(b))) == (int(a) >> 64 == int(b) >> 64)


@given(a=st.ip_addresses(v=4), b=st.ip_addresses(v=4), junk=st.text(max_size=40))
def test_client_keys_are_distinct_per_ipv4_address_and_always_one_subject_token(a: Any, b: Any, junk: str) -> None:
    assert (client_key(str(a)) == client_key(str(b))) == (a == b)
    for key in (client_key(str(a)), client_key(junk)):
        assert key and not any(c in key for c in ".*> \t\r\n")


# --- the limiter against the session's NATS ----------------------------------------------------------


@pytest.fixture
async def make_limits(servers: Stack) -> AsyncIterator[LimitsFactory]:
    """Limiters on their own streams (a fresh namespace), so test limits never touch the gateways' streams."""
    clients: list[Client] = []
    streams: set[str] = set()
    namespace = f"RLTEST_{uuid.uuid4().hex[:8].upper()}"

    async def _make(**options: Any) -> Limits:
        nc = await nats.connect(servers.nats_url)
        clients.append(nc)
        limits = Limits(nc, namespace=options.pop("namespace", namespace), **options)
        await limits.start()
        streams.update(scope.stream for scope in limits.scopes)
        return limits

    yield _make
    for nc in clients:
        if not nc.is_closed:
            await nc.close()
    async with await nats.connect(servers.nats_url) as nc:
        for stream in streams:
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)


async def _outcome(limits: Limits, endpoint: str, ip: str = "", public: bool = False) -> Decision | RateLimited:
    try:
        return await limits.admit_run(endpoint, public, ip)
    except RateLimited as refused:
        return refused


async def test_concurrent_decisions_on_three_connections_admit_exactly_the_limit(make_limits: LimitsFactory) -> None:
    replicas = [await make_limits() for _ in range(3)]
    outcomes = await asyncio.gather(*(_outcome(replicas[i % 3], "aep_hot") for i in range(200)))
    admitted = [o for o in outcomes if isinstance(o, Decision)]
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(admitted) == 60 and len(refused) == 140
    # Remaining is read after the admission, so it counts the concurrent ones that landed meanwhile.
    assert all(0 <= d.remaining < 60 and d.limit == 60 for d in admitted)
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 and r.headers["X-RateLimit-Remaining"] == "0" for r in refused)


@dataclass
class Model:
    """The specification: a request passes when both its scopes have room; a refusal consumes nothing."""

    per_ip: int
    per_endpoint: int

    def replay(self, ips: list[int]) -> list[str | None]:
        per_ip: collections.Counter[int] = collections.Counter()
        total, verdicts = 0, []
        for ip in ips:
            if per_ip[ip] >= self.per_ip:
                verdicts.append("client_ip")
            elif total >= self.per_endpoint:
                verdicts.append("endpoint")
            else:
                per_ip[ip] += 1
                total += 1
                verdicts.append(None)
        return verdicts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ips=st.lists(st.integers(0, 3), max_size=30))
async def test_public_runs_pass_both_scopes_and_a_refusal_consumes_neither(
    make_limits: LimitsFactory, ips: list[int]
) -> None:
    limits = await make_limits(per_client_ip=3, per_endpoint=7, namespace="RLTEST_MODEL")
    endpoint = f"aep_{uuid.uuid4().hex}"
    for ip, expected in zip(ips, Model(3, 7).replay(ips), strict=True):
        outcome = await _outcome(limits, endpoint, f"198.51.100.{ip}", public=True)
        if expected is None:
            assert isinstance(outcome, Decision)
        else:
            assert isinstance(outcome, RateLimited), f"expected a refusal by the {expected} scope"
            assert outcome.headers["X-RateLimit-Limit"] == str(3 if expected == "client_ip" else 7)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.lists(st.integers(0, 6), min_size=1, max_size=4))
async def test_concurrent_public_runs_admit_what_each_address_and_the_endpoint_allow(
    make_limits: LimitsFactory, counts: list[int]
) -> None:
    limits = await make_limits(per_client_ip=3, per_endpoint=7, namespace="RLTEST_MODEL")
    endpoint = f"aep_{uuid.uuid4().hex}"
    requests = [f"198.51.100.{ip}" for ip, n in enumerate(counts) for _ in range(n)]
    outcomes = await asyncio.gather(*(_outcome(limits, endpoint, ip, public=True) for ip in requests))
    admitted = sum(isinstance(o, Decision) for o in outcomes)
    assert admitted == min(7, sum(min(n, 3) for n in counts))


async def test_the_window_slides_so_a_boundary_admits_no_burst(make_limits: LimitsFactory) -> None:
    limits = await make_limits(per_endpoint=3, window_s=4)
    started = time.monotonic()
    assert [isinstance(await _outcome(limits, "aep_slide"), Decision) for _ in range(2)] == [True, True]
    await asyncio.sleep(2)
    assert isinstance(await _outcome(limits, "aep_slide"), Decision)
    refused = await _outcome(limits, "aep_slide")
    assert isinstance(refused, RateLimited) and refused.headers["Retry-After"] in ("1", "2")
    await asyncio.sleep(started + 4.5 - time.monotonic())
    # The first two have left the window, the third has not: two more fit, not a fresh three.
    later = [await _outcome(limits, "aep_slide") for _ in range(3)]
    assert [isinstance(o, Decision) for o in later] == [True, True, False]


async def test_test_runs_have_their_own_window_apart_from_live_traffic(make_limits: LimitsFactory) -> None:
    limits = await make_limits(test_runs=2)
    assert (await limits.admit_test("aep_t")).remaining == 1
    assert (await limits.admit_test("aep_t")).remaining == 0
    with pytest.raises(RateLimited) as refused:
        await limits.admit_test("aep_t")
    assert "test runs" in refused.value.message
    assert (await limits.admit_run("aep_t", False, "")).remaining == 59


async def test_refusals_are_counted_per_endpoint_and_scope(make_limits: LimitsFactory) -> None:
    limits = await make_limits(per_client_ip=1)
    endpoint = f"aep_{uuid.uuid4().hex}"
    await limits.admit_run(endpoint, True, "203.0.113.1")
    for _ in range(2):
        with pytest.raises(RateLimited):
            await limits.admit_run(endpoint, True, "203.0.113.1")
    labels = {"endpoint_id": endpoint, "scope": "client_ip"}
    assert REGISTRY.get_sample_value("agentry_rate_limit_refusals_total", labels) == 2


async def test_streams_lost_with_a_nats_restart_are_recreated_on_the_next_decision(
    make_limits: LimitsFactory, nc: Client
) -> None:
    limits = await make_limits()
    await limits.admit_run("aep_lost", False, "")
    for scope in limits.scopes:  # what a standalone NATS restart does to memory streams
        await nc.jetstream().delete_stream(scope.stream)
    assert (await limits.admit_run("aep_lost", False, "")).remaining == 59


async def test_without_nats_the_limiter_fails_closed_unless_told_to_fail_open(make_limits: LimitsFactory) -> None:
    closed = await make_limits(timeout_s=0.5, namespace=f"RLTEST_{uuid.uuid4().hex[:8].upper()}")
    opened = await make_limits(timeout_s=0.5, fail_open=True, namespace=f"RLTEST_{uuid.uuid4().hex[:8].upper()}")
    before = REGISTRY.get_sample_value("agentry_rate_limiter_unavailable_total", {"mode": "fail_closed"}) or 0
    for limits in (closed, opened):
        await limits.nc.close()
    with pytest.raises(ServiceUnavailable) as unavailable:
        await closed.admit_run("aep_down", False, "")
    assert unavailable.value.code == "rate_limiter_unavailable"
    assert (await opened.admit_run("aep_down", True, "203.0.113.1")).limit == 60
    after = REGISTRY.get_sample_value("agentry_rate_limiter_unavailable_total", {"mode": "fail_closed"})
    assert after == before + 1


# --- over HTTP, three gateway processes ---------------------------------------------------------------


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
