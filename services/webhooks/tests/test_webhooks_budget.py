"""`billing.budget.reached` becomes one `budget.reached` delivery per webhook, whatever the redeliveries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from nats.aio.client import Client
from standardwebhooks import Webhook as StandardWebhook

from agentry_common import subjects
from agentry_common.events import BudgetReached

from .conftest import Receiver

pytestmark = pytest.mark.usefixtures("stack")


async def test_a_reached_budget_is_delivered_once_with_its_endpoint_budget_and_period(
    http: httpx.AsyncClient, auth: dict[str, str], user: str, receiver: Receiver, nc: Client
) -> None:
    r = await http.post("/api/webhooks", json={"url": receiver.url, "events": ["budget.reached"]}, headers=auth)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    event = BudgetReached(owner_id=user, endpoint_id="aep_b", budget_cents=5000, budget_period="month",
                          period_start=datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip
    for copy in range(3):  # redelivered past the broker's de-duplication window
        await nc.jetstream().publish(subjects.BUDGET_REACHED, event.model_dump_json().encode(),
                                     headers={"Nats-Msg-Id": f"{event.msg_id()}:{copy}"})  # fmt: skip
    (got,) = await receiver.wait_for(1)
    body = StandardWebhook(secret).verify(got.body, got.headers)
    assert body["type"] == "budget.reached"
    assert body["data"] == {"endpoint_id": "aep_b", "budget_cents": 5000, "budget_period": "month"}
    await asyncio.sleep(1.5)
    assert len(receiver.got) == 1
