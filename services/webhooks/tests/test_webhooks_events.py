"""Platform events become deliveries: run and charge events from JetStream, once per webhook and event however
often the event arrives; several replicas share the queue without sending a delivery twice; and the SSRF guard
is applied again when sending."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from standardwebhooks import Webhook as StandardWebhook

from agentry_common import subjects
from agentry_common.events import ChargeCollected, Event, RunCompleted, Usage
from agentry_dev.stack import Stack
from agentry_webhooks.delivery import Sender
from agentry_webhooks.settings import Settings

from .conftest import Receiver

pytestmark = pytest.mark.usefixtures("stack")


async def create(http: httpx.AsyncClient, auth: dict[str, str], url: str, events: list[str]) -> dict[str, Any]:
    r = await http.post("/api/webhooks", json={"url": url, "events": events}, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def publish(nc: Client, subject: str, event: Event, msg_id: str) -> None:
    """Publish as the producer would; a different `Nats-Msg-Id` gets past the broker's de-duplication, as a
    redelivery after its window would."""
    await nc.jetstream().publish(subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id})


async def test_a_redelivered_run_event_is_delivered_once_and_only_to_enabled_subscribers(
    http: httpx.AsyncClient, auth: dict[str, str], user: str, receiver: Receiver, nc: Client
) -> None:
    subscribed = await create(http, auth, receiver.url, ["run.succeeded"])
    other_type = (await create(http, auth, receiver.url, ["run.failed"]))["webhook"]
    disabled = (await create(http, auth, receiver.url, ["run.succeeded"]))["webhook"]
    r = await http.patch(f"/api/webhooks/{disabled['id']}", json={"enabled": False}, headers=auth)
    assert r.status_code == 200 and r.json()["webhook"]["enabled"] is False
    assert (await http.post(f"/api/webhooks/{disabled['id']}/test", headers=auth)).status_code == 409

    run_id = f"run_{uuid.uuid4().hex}"
    event = RunCompleted(run_id=run_id, endpoint_id="aep_x", owner_id=user, usage=Usage(tokens_input=7))
    for copy in range(3):
        await publish(nc, subjects.RUN_COMPLETED, event, f"{event.msg_id()}:{copy}")

    (got,) = await receiver.wait_for(1)
    body = StandardWebhook(subscribed["secret"]).verify(got.body, got.headers)
    assert body["type"] == "run.succeeded" and body["data"]["run_id"] == run_id
    assert body["data"]["key_id"] is None and body["data"]["usage"]["tokens_input"] == 7
    await asyncio.sleep(1.5)  # time for the copies to be consumed (and, were it wrong, delivered)
    assert len(receiver.got) == 1
    for webhook_id, count in ((subscribed["webhook"]["id"], 1), (other_type["id"], 0), (disabled["id"], 0)):
        r = await http.get(f"/api/webhooks/{webhook_id}/deliveries", headers=auth)
        assert len(r.json()["deliveries"]) == count, r.text


async def test_charge_events_reach_only_their_owner(
    http: httpx.AsyncClient, auth: dict[str, str], user: str, receiver: Receiver, nc: Client
) -> None:
    created = await create(http, auth, receiver.url, ["charge.collected"])
    run_id = f"run_{uuid.uuid4().hex}"
    someone_else = ChargeCollected(charge_id=f"chg_{uuid.uuid4().hex}", run_id=run_id, endpoint_id="aep_y",
                                   owner_id="not-" + user, amount_cents=99)  # fmt: skip
    mine = ChargeCollected(charge_id=f"chg_{uuid.uuid4().hex}", run_id=run_id, endpoint_id="aep_y",
                           owner_id=user, amount_cents=25)  # fmt: skip
    await publish(nc, subjects.CHARGE_COLLECTED, someone_else, someone_else.msg_id())
    await publish(nc, subjects.CHARGE_COLLECTED, mine, mine.msg_id())
    (got,) = await receiver.wait_for(1)
    body = StandardWebhook(created["secret"]).verify(got.body, got.headers)
    assert body["type"] == "charge.collected"
    assert {k: body["data"][k] for k in ("run_id", "endpoint_id", "amount_cents", "status")} == {
        "run_id": run_id, "endpoint_id": "aep_y", "amount_cents": 25, "status": "collected",
    }  # fmt: skip
    await asyncio.sleep(1)
    assert len(receiver.got) == 1


async def test_two_replicas_share_the_queue_and_never_send_a_delivery_twice(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver, stack: Stack
) -> None:
    second = stack.start_service("webhooks")
    try:
        webhooks = [(await create(http, auth, receiver.url, ["run.failed"]))["webhook"]["id"] for _ in range(3)]
        queued = []
        for _ in range(10):
            for webhook_id in webhooks:
                r = await http.post(f"/api/webhooks/{webhook_id}/test", headers=auth)
                assert r.status_code == 202, r.text
                queued.append(r.json()["delivery"]["id"])
        await receiver.wait_for(len(queued))
        await asyncio.sleep(1)
        ids = [g.headers["webhook-id"] for g in receiver.got]
        assert sorted(ids) == sorted(queued), "each delivery exactly once"
        assert all(json.loads(g.body)["type"] == "webhook.test" for g in receiver.got)
    finally:
        second.stop()


async def test_the_guard_runs_again_at_delivery_a_refused_address_is_never_contacted(receiver: Receiver) -> None:
    # Registered while allowed (or DNS changed since): sending checks the address again and refuses it.
    sender = Sender(Settings(allow_private_urls=False, webhook_timeout_s=5))
    try:
        outcome = await sender.send(receiver.url, "whd_test", '{"type":"webhook.test"}', "whsec_" + "A" * 43 + "=")
    finally:
        await sender.close()
    assert not outcome.ok and outcome.response_status is None
    assert outcome.error is not None and outcome.error.startswith("url_not_allowed")
    assert receiver.got == []


async def test_deliveries_and_events_survive_a_restart_of_the_service(
    http: httpx.AsyncClient, auth: dict[str, str], user: str, receiver: Receiver, nc: Client, stack: Stack
) -> None:
    retried = (await create(http, auth, receiver.url, ["run.failed"]))["webhook"]["id"]
    notified = await create(http, auth, receiver.url, ["run.succeeded"])
    receiver.script = [500] * 1000
    delivery_id = (await http.post(f"/api/webhooks/{retried}/test", headers=auth)).json()["delivery"]["id"]
    await receiver.wait_for(1)
    svc = stack.service("webhooks")
    await asyncio.to_thread(svc.stop)  # with a failing delivery pending in its queue
    try:
        # An event published while the service is down waits in its durable consumer.
        run_id = f"run_{uuid.uuid4().hex}"
        event = RunCompleted(run_id=run_id, endpoint_id="aep_z", owner_id=user)
        await publish(nc, subjects.RUN_COMPLETED, event, event.msg_id())
        receiver.script = []
        seen = len(receiver.got)
        await asyncio.sleep(0.5)
        assert len(receiver.got) == seen  # nobody sends while it is down
    finally:
        await asyncio.to_thread(svc.start)
        await asyncio.to_thread(svc.wait_ready)
    await receiver.wait_for(seen + 2)
    after = {json.loads(g.body)["type"]: g for g in receiver.got[seen:]}
    assert after["webhook.test"].headers["webhook-id"] == delivery_id  # the pending one, same id, resumed
    body = StandardWebhook(notified["secret"]).verify(after["run.succeeded"].body, after["run.succeeded"].headers)
    assert body["data"]["run_id"] == run_id
