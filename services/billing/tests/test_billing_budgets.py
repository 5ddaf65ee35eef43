"""Endpoint budgets in billing: a run holds in its endpoint's budget and its key's cap together or not at all, and a
reached budget is announced once per period (`billing.budget.reached`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry_common import rpc, subjects
from agentry_common.errors import PaymentRequired
from agentry_common.requests import ReserveSpend, SpendLimit, SpendReserved

pytestmark = pytest.mark.usefixtures("billing_replicas")


def _limits(endpoint_id: str, owner: str, budget: int, key_cap: int) -> list[SpendLimit]:
    return [
        SpendLimit(scope=f"key:key_{endpoint_id}", period="month", cap_cents=key_cap, code="key_spend_cap_reached"),
        SpendLimit(
            scope=f"endpoint:{endpoint_id}",
            period="day",
            cap_cents=budget,
            code="endpoint_budget_reached",
            endpoint_id=endpoint_id,
            owner_id=owner,
        ),
    ]


async def _reserve(nc: Client, run_id: str, amount: int, limits: list[SpendLimit]) -> SpendReserved | str:
    try:
        cmd = ReserveSpend(run_id=run_id, amount_cents=amount, limits=limits)
        return await rpc.call(nc, subjects.SPEND_RESERVE, cmd, SpendReserved, timeout=30)
    except PaymentRequired as err:
        return err.code


async def _holds(engine: AsyncEngine, scope: str) -> Any:
    async with engine.connect() as conn:
        sql = "SELECT count(*), coalesce(sum(amount_cents), 0) FROM billing.spend_reservations WHERE scope = :scope"
        return tuple((await conn.execute(text(sql), {"scope": scope})).one())


async def test_a_key_cap_refusal_leaves_no_budget_hold_and_the_other_way_round(
    nc: Client, billing_engine: AsyncEngine
) -> None:
    endpoint_id = f"aep_{uuid.uuid4().hex[:10]}"
    limits = _limits(endpoint_id, "owner-x", budget=25, key_cap=10)
    assert isinstance(await _reserve(nc, "run_a" + endpoint_id, 10, limits), SpendReserved)
    assert await _reserve(nc, "run_b" + endpoint_id, 10, limits) == "key_spend_cap_reached"
    assert await _holds(billing_engine, f"endpoint:{endpoint_id}") == (1, 10)  # only the admitted run's
    wide = _limits(endpoint_id, "owner-x", budget=25, key_cap=1000)
    assert isinstance(await _reserve(nc, "run_c" + endpoint_id, 10, wide), SpendReserved)
    assert await _reserve(nc, "run_d" + endpoint_id, 10, wide) == "endpoint_budget_reached"
    assert await _holds(billing_engine, f"key:key_{endpoint_id}") == (2, 20)  # the refused run holds no key money


async def test_a_reached_budget_is_announced_once_per_period_and_amount(nc: Client) -> None:
    seen: list[Msg] = []
    arrived = asyncio.Event()

    async def keep(msg: Msg) -> None:
        seen.append(msg)
        arrived.set()

    await nc.subscribe(subjects.BUDGET_REACHED, cb=keep)
    endpoint_id = f"aep_{uuid.uuid4().hex[:10]}"
    limits = _limits(endpoint_id, "owner-y", budget=20, key_cap=1000)
    answers = await asyncio.gather(*(_reserve(nc, f"run_{i}_{endpoint_id}", 10, limits) for i in range(8)))
    assert sorted(map(str, answers)).count("endpoint_budget_reached") == 6
    await asyncio.wait_for(arrived.wait(), 30)
    await asyncio.sleep(1)
    mine = [orjson.loads(m.data) for m in seen if orjson.loads(m.data)["endpoint_id"] == endpoint_id]
    assert len(mine) == 1
    assert {k: mine[0][k] for k in ("owner_id", "budget_cents", "budget_period")} == {
        "owner_id": "owner-y", "budget_cents": 20, "budget_period": "day",
    }  # fmt: skip
