"""Usage analytics and low-balance alerts as an owner sees them, through all the services on real NATS and
PostgreSQL: `GET /api/usage` agrees with run history and with the ledger to the cent (also after every run event
is delivered again), as JSON and as CSV, by hour, day and month, by endpoint; and `balance.low` reaches the
owner's webhook once per crossing."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from standardwebhooks import Webhook as StandardWebhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentry_common import subjects
from agentry_dev.stack import Stack
from agentry_dev.testing import serve_asgi

pytestmark = pytest.mark.usefixtures("stack")

COUNTERS = ("runs", "succeeded", "failed", "tokens_input", "tokens_output", "charged_cents", "uncollected_cents")


async def _eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 120.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.25)


async def _endpoint(http: httpx.AsyncClient, auth: dict[str, str], ws: str, price: int) -> dict[str, Any]:
    body = {"name": f"agent {price}", "workspace_id": ws, "system_prompt": "Be useful.", "llm_provider": "mock",
            "price_per_run_cents": price}  # fmt: skip
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return {**r.json(), "id": r.json()["endpoint"]["id"]}


async def _workspace(http: httpx.AsyncClient, auth: dict[str, str]) -> str:
    return str((await http.post("/api/workspaces", json={"name": "w"}, headers=auth)).json()["workspace"]["id"])


async def _deposit(http: httpx.AsyncClient, auth: dict[str, str], cents: int) -> None:
    headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    r = await http.post("/api/balance/deposit", json={"amount_cents": cents}, headers=headers)
    assert r.status_code == 201, r.text


async def _history(http: httpx.AsyncClient, auth: dict[str, str], endpoint_id: str) -> list[dict[str, Any]]:
    runs, cursor = [], None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"/api/agent-endpoints/{endpoint_id}/runs", params=params, headers=auth)).json()
        runs += page["runs"]
        cursor = page["next_cursor"]
        if not cursor:
            return runs


async def _ledger(http: httpx.AsyncClient, auth: dict[str, str]) -> tuple[int, int]:
    """(charged, uncollected) cents of the wallet's run charges, from its transaction list."""
    charged = uncollected = 0
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/api/balance/transactions", params=params, headers=auth)).json()
        for t in page["transactions"]:
            if t["kind"] == "run_charge":
                if t["status"] == "uncollected":
                    uncollected -= t["amount_cents"]
                else:
                    charged -= t["amount_cents"]
        cursor = page["next_cursor"]
        if not cursor:
            return charged, uncollected


def _expected(history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(history),
        "succeeded": sum(r["status"] == "succeeded" for r in history),
        "failed": sum(r["status"] != "succeeded" for r in history),
        "tokens_input": sum(r["tokens_input"] for r in history),
        "tokens_output": sum(r["tokens_output"] for r in history),
        "charged_cents": sum(r["charge"]["amount_cents"] for r in history if r["charge"]["status"] == "collected"),
        "uncollected_cents": sum(
            r["charge"]["amount_cents"] for r in history if r["charge"]["status"] == "uncollected"
        ),
        "cost_cents": sum(r["cost_cents"] for r in history),
    }


def _counters(totals: dict[str, Any]) -> dict[str, Any]:
    return {k: totals[k] for k in COUNTERS}


async def _usage(http: httpx.AsyncClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await http.get("/api/usage", params=params, headers=auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _redeliver_run_events(nc: Client, owner_id: str) -> int:
    """Publish every run event of this owner again, each under a fresh `Nats-Msg-Id` (past the broker's
    de-duplication, as a replay after its window would be): only billing's per-run marker can stop them."""
    js = nc.jetstream()
    again = []
    for subject in (subjects.RUN_COMPLETED, subjects.RUN_FAILED):
        info = await js.stream_info(subjects.RUN_EVENTS_STREAM.name, subjects_filter=subject)
        if not (info.state.subjects or {}).get(subject):
            continue
        sub = await js.subscribe(
            subject, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        try:
            for _ in range(info.state.subjects[subject]):
                msg = await sub.next_msg(timeout=10)
                try:
                    event = json.loads(msg.data)
                except ValueError:  # another test's junk on the stream (billing terminates it)
                    continue
                if isinstance(event, dict) and event.get("owner_id") == owner_id:
                    again.append((msg.subject, msg.data))
        finally:
            await sub.unsubscribe()
    for subject, data in again:
        await js.publish(subject, data, headers={"Nats-Msg-Id": f"redelivery:{uuid.uuid4().hex}"})
    return len(again)


async def _billing_idle(nc: Client) -> bool:
    info = await nc.jetstream().consumer_info(subjects.RUN_EVENTS_STREAM.name, subjects.BILLING_CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0


@pytest.fixture
async def roomy_http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway of its own whose per-endpoint rate limit lets a few hundred runs through in a minute."""
    gateway = stack.start_service("gateway", RATE_LIMIT_PER_ENDPOINT="10000")
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            yield client
    finally:
        gateway.stop()
        if gateway in stack.services:
            stack.services.remove(gateway)


async def test_usage_agrees_with_run_history_and_the_ledger_also_after_redelivery(
    roomy_http: httpx.AsyncClient,
    auth: dict[str, str],
    user: str,
    make_auth: Callable[..., dict[str, str]],
    nc: Client,
) -> None:
    http = roomy_http
    ws = await _workspace(http, auth)
    cheap, dear = await _endpoint(http, auth, ws, 3), await _endpoint(http, auth, ws, 7)
    await _deposit(http, auth, 500)  # covers part of the runs: the rest stays uncollected until the next deposit
    r = await http.post(f"/api/agent-endpoints/{cheap['id']}/keys", json={"name": "second"}, headers=auth)
    assert r.status_code == 201, r.text
    cheap_second_key = {**cheap, "api_key": r.json()["api_key"]}  # two callers of one endpoint
    plan = [(cheap, "hello")] * 55 + [(cheap_second_key, "hello")] * 55 + [(dear, "hello")] * 110
    plan += [(cheap_second_key, {"mock": {"fail": "llm_provider_error"}})] * 20
    plan += [(dear, {"mock": {"fail": "llm_timeout"}})] * 15
    gate = asyncio.Semaphore(12)

    async def run(endpoint: dict[str, Any], run_input: Any) -> int:
        async with gate:
            r = await http.post(endpoint["run_url"], json={"input": run_input},
                                headers={"X-API-Key": endpoint["api_key"]})  # fmt: skip
            return r.status_code

    statuses = await asyncio.gather(*(run(e, i) for e, i in plan))
    assert 429 not in statuses
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    until = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    period = {"from": since, "to": until}

    async def counted() -> dict[str, Any] | None:
        report = await _usage(http, auth, **period)
        return report if report["totals"]["runs"] == len(plan) else None

    assert await _eventually(counted), (await _usage(http, auth, **period))["totals"]
    assert await _eventually(lambda: _billing_idle(nc))

    async def check() -> dict[str, Any]:
        histories = {e["id"]: await _history(http, auth, e["id"]) for e in (cheap, dear)}
        everything = histories[cheap["id"]] + histories[dear["id"]]
        want = _expected(everything)
        report = await _usage(http, auth, **period)
        assert _counters(report["totals"]) == {k: want[k] for k in COUNTERS}
        assert report["totals"]["cost_cents"] == pytest.approx(want["cost_cents"], abs=1e-3)
        assert (report["totals"]["charged_cents"], report["totals"]["uncollected_cents"]) == await _ledger(http, auth)
        by_endpoint = await _usage(http, auth, group_by="endpoint", **period)
        for endpoint_id, history in histories.items():
            mine = [b for b in by_endpoint["buckets"] if b["endpoint_id"] == endpoint_id]
            expected = _expected(history)
            for counter in COUNTERS:
                assert sum(b[counter] for b in mine) == expected[counter], (endpoint_id, counter)
        by_key = await _usage(http, auth, group_by="key", **period)
        keys = {r["key_id"] for r in everything}
        assert len(keys) == 3 and None not in keys  # cheap's two keys and dear's default
        for key_id in keys:
            mine = [b for b in by_key["buckets"] if b["key_id"] == key_id]
            expected = _expected([r for r in everything if r["key_id"] == key_id])
            for counter in COUNTERS:
                assert sum(b[counter] for b in mine) == expected[counter], (key_id, counter)
        return report

    first = await check()
    assert first["totals"]["failed"] == 35 and first["totals"]["uncollected_cents"] > 0
    assert first["totals"]["latency_ms_p50"] is not None
    assert first["totals"]["latency_ms_p50"] <= first["totals"]["latency_ms_p95"]

    assert await _redeliver_run_events(nc, user) == len(plan)
    await asyncio.sleep(1)
    assert await _eventually(lambda: _billing_idle(nc))
    assert (await check())["totals"] == first["totals"], "a redelivered run is neither counted nor charged twice"

    await _deposit(http, auth, 5_000)  # settles every uncollected charge: usage moves them to charged

    async def settled() -> bool:
        return (await _usage(http, auth, **period))["totals"]["uncollected_cents"] == 0

    assert await _eventually(settled)
    after = await check()
    assert after["totals"]["charged_cents"] == first["totals"]["charged_cents"] + first["totals"]["uncollected_cents"]

    # Any granularity rolls the same hours up; grouping by key (no caller keys on these events yet) is one group.
    for granularity in ("hour", "day", "month"):
        report = await _usage(http, auth, granularity=granularity, **period)
        assert _counters(report["totals"]) == _counters(after["totals"]), granularity
        assert sum(b["runs"] for b in report["buckets"]) == len(plan)
    assert len((await _usage(http, auth, granularity="day", group_by="endpoint", **period))["buckets"]) >= 2
    assert sum(b["runs"] for b in (await _usage(http, auth, group_by="key", **period))["buckets"]) == len(plan)
    only_cheap = await _usage(http, auth, endpoint_id=cheap["id"], **period)
    assert only_cheap["totals"]["runs"] == 130

    # CSV: the same rows as JSON.
    hourly = await _usage(http, auth, granularity="hour", group_by="endpoint", **period)
    r = await http.get("/api/usage", params={"granularity": "hour", "group_by": "endpoint", **period},
                       headers={**auth, "Accept": "text/csv"})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(hourly["buckets"])
    for row, bucket in zip(rows, hourly["buckets"], strict=True):
        assert datetime.fromisoformat(row["start"]) == datetime.fromisoformat(bucket["start"])
        assert row["endpoint_id"] == bucket["endpoint_id"] and row["key_id"] == ""
        for counter in COUNTERS:
            assert int(row[counter]) == bucket[counter]
        assert float(row["cost_cents"]) == pytest.approx(bucket["cost_cents"])
        assert int(row["latency_ms_p95"]) == bucket["latency_ms_p95"]
    same = await http.get("/api/usage", params={"format": "csv", "granularity": "hour", "group_by": "endpoint",
                                                **period}, headers=auth)  # fmt: skip
    assert same.text == r.text

    # Another owner sees nothing of this owner's, even naming the endpoint.
    stranger = make_auth(f"user-{uuid.uuid4().hex[:12]}")
    theirs = (await http.get("/api/usage", params={"endpoint_id": cheap["id"], **period}, headers=stranger)).json()
    assert theirs["buckets"] == [] and theirs["totals"]["runs"] == 0


async def test_usage_refuses_more_than_ten_thousand_buckets_and_a_reversed_period(
    http: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    ok = {"from": start.isoformat(), "to": (start + timedelta(hours=10_000)).isoformat(), "granularity": "hour"}
    assert (await http.get("/api/usage", params=ok, headers=auth)).status_code == 200
    too_many = {**ok, "to": (start + timedelta(hours=10_001)).isoformat()}
    r = await http.get("/api/usage", params=too_many, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_buckets"
    reversed_period = {"from": "2024-02-01", "to": "2024-01-01"}
    r = await http.get("/api/usage", params=reversed_period, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_range"
    r = await http.get("/api/usage", params={"from": "last tuesday"}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_date"
    r = await http.get("/api/usage", params={"granularity": "week"}, headers=auth)
    assert r.status_code == 422 and "error" in r.json()
    assert (await http.get("/api/usage")).status_code == 401


class Receiver:
    def __init__(self) -> None:
        self.url = ""
        self.got: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: Request) -> Response:
        self.got.append(({k.lower(): v for k, v in request.headers.items()}, await request.body()))
        return Response(status_code=200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    base, stop = await serve_asgi(Starlette(routes=[Route("/hook", recv.handle, methods=["POST"])]))
    recv.url = f"{base}/hook"
    try:
        yield recv
    finally:
        await stop()


async def test_balance_low_reaches_the_owners_webhook_once_per_crossing(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    r = await http.post("/api/webhooks", json={"url": receiver.url, "events": ["balance.low", "deposit.succeeded"]},
                        headers=auth)  # fmt: skip
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert (await http.get("/api/balance/alerts", headers=auth)).json() == {"low_balance_cents": None}
    r = await http.put("/api/balance/alerts", json={"low_balance_cents": 250}, headers=auth)
    assert r.status_code == 200 and r.json() == {"low_balance_cents": 250}
    assert (await http.get("/api/balance/alerts", headers=auth)).json() == {"low_balance_cents": 250}
    r = await http.put("/api/balance/alerts", json={"low_balance_cents": -1}, headers=auth)
    assert r.status_code == 422

    ws = await _workspace(http, auth)
    endpoint = await _endpoint(http, auth, ws, 100)
    key = {"X-API-Key": endpoint["api_key"]}

    async def runs_then_balance(count: int, balance: int) -> None:
        for _ in range(count):
            assert (await http.post(endpoint["run_url"], json={"input": "hi"}, headers=key)).status_code == 200

        async def reached() -> bool:
            return (await http.get("/api/balance", headers=auth)).json()["balance_cents"] == balance

        assert await _eventually(reached)

    await _deposit(http, auth, 500)
    await runs_then_balance(5, 0)  # 400, 300, 200 (below 250: one alert), 100, 0
    await _deposit(http, auth, 500)  # back above the threshold: armed again
    await runs_then_balance(3, 200)  # 400, 300, 200: the second crossing

    def bodies() -> list[dict[str, Any]]:
        return [StandardWebhook(secret).verify(body, headers) for headers, body in receiver.got]

    async def four() -> bool:
        return len(receiver.got) >= 4

    assert await _eventually(four), [b["type"] for b in bodies()]
    await asyncio.sleep(2)  # time for a wrong extra alert to arrive
    got = bodies()
    low = [b for b in got if b["type"] == "balance.low"]
    deposits = [b for b in got if b["type"] == "deposit.succeeded"]
    assert len(low) == 2, "one alert per crossing"
    # The balance right after the charge batch that crossed (runs may be charged several per batch).
    assert all(b["data"]["threshold_cents"] == 250 and 0 <= b["data"]["balance_cents"] < 250 for b in low)
    assert sorted(b["data"]["amount_cents"] for b in deposits) == [500, 500]
    listed = (await http.get("/api/balance/deposits", headers=auth)).json()["deposits"]
    assert sorted(b["data"]["deposit_id"] for b in deposits) == sorted(d["id"] for d in listed)
    assert len(got) == 4
