"""Endpoint budgets (issue #17): never passed by concurrent runs on three gateway replicas, 402
`endpoint_budget_reached` once reached, raised to let runs in again, announced once by a `budget.reached` webhook,
and opt-in: an endpoint without a budget asks billing nothing."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from standardwebhooks import Webhook as StandardWebhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentry_common import subjects

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


class Receiver:
    """A webhook receiver on loopback: records what it is sent, answers 200."""

    def __init__(self) -> None:
        self.url = ""
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: Request) -> Response:
        self.got.append(({k.lower(): v for k, v in request.headers.items()}, await request.body()))
        self.arrived.set()
        return Response(status_code=200)


@pytest.fixture
async def receiver(serve_app: Callable[[Any], Awaitable[tuple[str, Any]]]) -> AsyncIterator[Receiver]:
    recv = Receiver()
    base, stop = await serve_app(Starlette(routes=[Route("/hook", recv.handle, methods=["POST"])]))
    recv.url = f"{base}/hook"
    try:
        yield recv
    finally:
        await stop()


class Watch:
    """Every message on a subject from now on (a plain subscription sees requests and JetStream publishes)."""

    def __init__(self) -> None:
        self.seen: list[Msg] = []
        self.arrived = asyncio.Event()

    async def keep(self, msg: Msg) -> None:
        self.seen.append(msg)
        self.arrived.set()


async def _watch(nc: Client, subject: str) -> Watch:
    watch = Watch()
    await nc.subscribe(subject, cb=watch.keep)
    await nc.flush()
    return watch


async def _burst(replicas: list[httpx.AsyncClient], run_url: str, key: str, n: int) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(replicas[i % 3].post(run_url, json={"input": "hi"}, headers={"X-API-Key": key}) for i in range(n))
        )
    )


async def _charged(http: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str) -> int:
    history = (await http.get(f"/api/agent-endpoints/{endpoint_id}/runs?limit=100", headers=auth)).json()["runs"]
    return sum(r["charge"]["amount_cents"] for r in history if r["charge"])


async def test_a_budget_is_never_passed_by_50_concurrent_runs_on_three_replicas_and_is_announced_once(
    replicas: list[httpx.AsyncClient],
    make_endpoint: EndpointFactory,
    http: httpx.AsyncClient,
    auth: dict[str, str],
    nc: Client,
    receiver: Receiver,
) -> None:
    hook = await http.post("/api/webhooks", json={"url": receiver.url, "events": ["budget.reached"]}, headers=auth)
    assert hook.status_code == 201, hook.text
    announced = await _watch(nc, subjects.BUDGET_REACHED)
    created = await make_endpoint(price_per_run_cents=7, budget_cents=100, budget_period="day")
    endpoint = created["endpoint"]
    assert (endpoint["budget_cents"], endpoint["budget_period"]) == (100, "day")

    answers = await _burst(replicas, created["run_url"], created["api_key"], 50)
    assert collections.Counter(r.status_code for r in answers) == {200: 14, 402: 36}  # 14 * 7 = 98 <= 100
    refused = next(r for r in answers if r.status_code == 402).json()["error"]
    assert refused["code"] == "endpoint_budget_reached" and "100 cents per day" in refused["message"]
    assert await _charged(http, auth, endpoint["id"]) == 98  # a refused run was never started, nor charged
    later = await replicas[2].post(created["run_url"], json={"input": "x"}, headers={"X-API-Key": created["api_key"]})
    assert later.status_code == 402 and later.json()["error"]["code"] == "endpoint_budget_reached"

    # Announced once, however many runs were refused, and delivered once to the owner's webhook.
    await asyncio.wait_for(announced.arrived.wait(), 60)
    await asyncio.wait_for(receiver.arrived.wait(), 60)
    await asyncio.sleep(1.5)  # time for a second one to arrive, were it wrong
    assert len(announced.seen) == 1 and len(receiver.got) == 1
    headers, body = receiver.got[0]
    delivered = StandardWebhook(hook.json()["secret"]).verify(body, headers)
    assert delivered["type"] == "budget.reached"
    assert delivered["data"] == {"endpoint_id": endpoint["id"], "budget_cents": 100, "budget_period": "day"}
    event = json.loads(announced.seen[0].data)
    assert event["type"] == "billing.budget.reached"
    assert {k: event[k] for k in ("owner_id", "endpoint_id", "budget_cents", "budget_period")} == {
        "owner_id": endpoint["owner_id"], "endpoint_id": endpoint["id"], "budget_cents": 100, "budget_period": "day",
    }  # fmt: skip

    # Raising the budget lets runs in again, up to the new amount.
    r = await http.patch(f"/api/agent-endpoints/{endpoint['id']}", json={"budget_cents": 114}, headers=auth)
    assert r.status_code == 200 and r.json()["endpoint"]["budget_cents"] == 114
    answers = await _burst(replicas, created["run_url"], created["api_key"], 6)
    assert collections.Counter(r.status_code for r in answers) == {200: 2, 402: 4}  # 98 + 2 * 7 = 112 <= 114
    assert await _charged(http, auth, endpoint["id"]) == 112


async def test_a_key_cap_refusal_leaves_no_budget_hold_behind(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await make_endpoint(price_per_run_cents=10, budget_cents=30)
    endpoint_id = created["endpoint"]["id"]
    r = await http.post(f"/api/agent-endpoints/{endpoint_id}/keys", json={"name": "small", "spend_cap_cents": 10},
                        headers=auth)  # fmt: skip
    small = r.json()["api_key"]
    assert (await http.post(created["run_url"], json={"input": "a"}, headers={"X-API-Key": small})).status_code == 200
    for _ in range(3):  # the key's cap refuses these; the endpoint's budget keeps nothing of them
        over = await http.post(created["run_url"], json={"input": "b"}, headers={"X-API-Key": small})
        assert over.status_code == 402 and over.json()["error"]["code"] == "key_spend_cap_reached"
    default = {"X-API-Key": created["api_key"]}
    assert [(await http.post(created["run_url"], json={"input": "c"}, headers=default)).status_code
            for _ in range(3)] == [200, 200, 402]  # fmt: skip


async def test_without_a_budget_or_cap_a_run_asks_billing_nothing(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str], nc: Client
) -> None:
    reservations = await _watch(nc, subjects.SPEND_RESERVE)
    created = await make_endpoint(price_per_run_cents=5)
    assert created["endpoint"]["budget_cents"] is None and created["endpoint"]["budget_period"] == "month"
    for _ in range(3):
        r = await http.post(created["run_url"], json={"input": "hi"}, headers={"X-API-Key": created["api_key"]})
        assert r.status_code == 200
    budgeted = await make_endpoint(price_per_run_cents=5, budget_cents=1000)
    r = await http.post(budgeted["run_url"], json={"input": "hi"}, headers={"X-API-Key": budgeted["api_key"]})
    assert r.status_code == 200
    await nc.flush()
    # Only the budgeted endpoint's run asked (the watch is live: it saw that one).
    assert [json.loads(m.data)["limits"][0]["scope"] for m in reservations.seen] == [
        f"endpoint:{budgeted['endpoint']['id']}"
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"budget_cents": -1}, "budget_cents"),
        ({"budget_cents": 100_000_001}, "budget_cents"),
        ({"budget_cents": 5, "budget_period": "week"}, "budget_period"),
    ],
)
async def test_a_bad_budget_is_refused_naming_the_field(
    make_endpoint: EndpointFactory, http: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    created = await make_endpoint(budget_cents=50)
    endpoint_id = created["endpoint"]["id"]
    r = await http.patch(f"/api/agent-endpoints/{endpoint_id}", json=body, headers=auth)
    assert r.status_code == 422 and field in r.json()["error"]["message"]
    r = await http.post("/api/agent-endpoints", json={"name": "x", "workspace_id": created["endpoint"]["workspace_id"],
                                                      "system_prompt": "p", **body}, headers=auth)  # fmt: skip
    assert r.status_code == 422 and field in r.json()["error"]["message"]
    # Removing a budget is `null`; nothing half-written before.
    r = await http.patch(f"/api/agent-endpoints/{endpoint_id}", json={"budget_cents": None}, headers=auth)
    assert r.status_code == 200 and r.json()["endpoint"]["budget_cents"] is None
