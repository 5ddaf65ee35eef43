"""Rate limits: exact sliding windows kept in NATS for every gateway replica (issue #6).

The window math, then the limiter itself against real NATS (the session's server, and a three-server cluster).
Over HTTP with three gateway processes: test_ratelimit_gateways.py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from agentry_common.errors import RateLimited, ServiceUnavailable
from agentry_dev.servers import _wait_port
from agentry_dev.stack import Stack, free_port
from agentry_gateway.ratelimit import Decision, Limits, Window, client_key, seconds_until, tighter

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


async def test_admissions_heard_together_share_a_window_read_that_counts_every_one_of_them(
    make_limits: LimitsFactory, servers: Stack
) -> None:
    """The headers' window read is sent after the admissions it answers for, and one read serves every
    admission the gateway heard before sending it: under load, fewer reads than runs (seen on the wire)."""
    limits = await make_limits()
    reads: list[bytes] = []

    async def heard(msg: Any) -> None:
        reads.append(msg.data)

    async with await nats.connect(servers.nats_url) as spy:
        await spy.subscribe(f"$JS.API.DIRECT.GET.{limits.endpoint.stream}", cb=heard)
        await spy.flush()
        decisions = await asyncio.gather(*(limits.admit_run("aep_shared", False, "") for _ in range(30)))
        await spy.flush()
    assert 1 <= len(reads) < 30
    # Each read counts what was admitted before it was sent: never more room than its own admission left,
    # and the last one (sent after the 30th admission) counts all 30.
    assert all(d.limit == 60 and 30 <= d.remaining <= 59 for d in decisions)
    assert min(d.remaining for d in decisions) == 30


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


async def test_refusals_are_counted_per_scope(make_limits: LimitsFactory) -> None:
    limits = await make_limits(per_client_ip=1)
    endpoint = f"aep_{uuid.uuid4().hex}"
    labels = {"scope": "client_ip"}
    before = REGISTRY.get_sample_value("agentry_rate_limit_refusals_total", labels) or 0.0
    await limits.admit_run(endpoint, True, "203.0.113.1")
    for _ in range(2):
        with pytest.raises(RateLimited):
            await limits.admit_run(endpoint, True, "203.0.113.1")
    assert REGISTRY.get_sample_value("agentry_rate_limit_refusals_total", labels) == before + 2


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


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[str]]:
    """Three nats-servers in one JetStream cluster (what STREAM_REPLICAS=3 runs on); yields their URLs."""
    ports, routes = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    peers = ",".join(f"nats://127.0.0.1:{r}" for r in routes)
    servers = []
    for i, (port, route) in enumerate(zip(ports, routes, strict=True)):
        conf = tmp_path / f"n{i}" / "nats.conf"
        conf.parent.mkdir()
        conf.write_text(
            f'server_name: n{i}\nlisten: "127.0.0.1:{port}"\njetstream {{ store_dir: "{conf.parent}" }}\n'
            f'cluster {{ name: rl, listen: "127.0.0.1:{route}", routes: [{peers}] }}\n'
        )
        server = Path(sys.executable).parent / "nats-server"
        servers.append(subprocess.Popen([server, "-c", str(conf)], stderr=subprocess.DEVNULL))
    try:
        for port, proc in zip(ports, servers, strict=True):
            _wait_port(port, 15, proc)  # a server that could not bind its ports fails at once, saying so
        yield [f"nats://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)


async def test_exact_on_a_three_server_nats_cluster_with_replicated_windows(nats_cluster: list[str]) -> None:
    clients: list[Client] = []
    try:
        for url in nats_cluster:
            clients.append(await nats.connect(url, connect_timeout=1, max_reconnect_attempts=20))
        replicas = [Limits(nc, replicas=3) for nc in clients]
        for _ in range(60):  # until the cluster has elected its meta leader
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await replicas[0].start()
                break
            await asyncio.sleep(0.25)
        outcomes = await asyncio.gather(
            *(_outcome(replicas[i % 3], "aep_r3", f"198.51.100.{i % 2}", public=True) for i in range(200))
        )
        assert sum(isinstance(o, Decision) for o in outcomes) == 40  # two addresses, 20 each
    finally:
        for nc in clients:
            await nc.close()
