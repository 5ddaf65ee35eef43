"""Owner webhooks over the gateway's HTTP API, against the real services, NATS and PostgreSQL, with a real
receiver on loopback. Retries are configured in seconds for tests (agentry_dev.testing)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook as StandardWebhook

from agentry_dev.stack import Stack

from .conftest import Receiver

pytestmark = pytest.mark.usefixtures("stack")


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """The Standard Webhooks check, written from the specification (not the service's code): the key is the
    base64 after `whsec_`; the signature is base64 HMAC-SHA256 over `id.timestamp.body`, prefixed `v1,`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split(" ")), "bad signature"


async def create(http: httpx.AsyncClient, auth: dict[str, str], url: str, events: list[str]) -> dict[str, Any]:
    r = await http.post("/api/webhooks", json={"url": url, "events": events, "description": "ops"}, headers=auth)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def deliveries(http: httpx.AsyncClient, auth: dict[str, str], webhook_id: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/webhooks/{webhook_id}/deliveries", headers=auth)
    assert r.status_code == 200, r.text
    return list(r.json()["deliveries"])


async def settled(http: httpx.AsyncClient, auth: dict[str, str], webhook_id: str, count: int) -> list[dict[str, Any]]:
    """The delivery log once `count` deliveries are no longer pending."""
    async with asyncio.timeout(60):
        while True:
            found = await deliveries(http, auth, webhook_id)
            if len(found) >= count and all(d["status"] != "pending" for d in found):
                return found
            await asyncio.sleep(0.1)


async def test_a_receiver_that_fails_twice_gets_the_same_signed_delivery_three_times_and_the_log_shows_it(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    receiver.script = [500, 503]
    created = await create(http, auth, receiver.url, ["run.succeeded"])
    webhook, secret = created["webhook"], created["secret"]
    r = await http.post(f"/api/webhooks/{webhook['id']}/test", headers=auth)
    assert r.status_code == 202, r.text
    delivery_id = r.json()["delivery"]["id"]

    got = await receiver.wait_for(3)
    assert [g.headers["webhook-id"] for g in got] == [delivery_id] * 3
    for g in got:
        verify(secret, g.headers, g.body)
        assert json.loads(g.body)["type"] == "webhook.test"
        assert g.body == got[0].body  # the same message, byte for byte

    (logged,) = await settled(http, auth, webhook["id"], 1)
    assert logged["id"] == delivery_id and logged["status"] == "succeeded"
    assert [a["response_status"] for a in logged["attempts"]] == [500, 503, 200]
    assert [a["error"] for a in logged["attempts"]] == ["http_500", "http_503", None]
    assert logged["next_attempt_at"] is None
    assert len(got) == 3  # nothing more once it succeeded


async def test_a_real_run_is_delivered_as_run_succeeded(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    created = await create(http, auth, receiver.url, ["run.succeeded", "run.failed"])
    workspace = (await http.post("/api/workspaces", json={"name": "Acme"}, headers=auth)).json()["workspace"]
    body = {"name": "Hooked", "workspace_id": workspace["id"], "system_prompt": "Echo.", "llm_provider": "mock"}
    r = await http.post("/api/agent-endpoints", json=body, headers=auth)
    assert r.status_code == 201, r.text
    endpoint, api_key = r.json()["endpoint"], r.json()["api_key"]
    r = await http.post(f"/api/run/{endpoint['slug']}", json={"input": "hello"}, headers={"X-API-Key": api_key})
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]

    (got,) = await receiver.wait_for(1)
    # The reference implementation's verifier agrees with ours.
    event = StandardWebhook(created["secret"]).verify(got.body, got.headers)
    assert event["type"] == "run.succeeded"
    data = event["data"]
    assert data["run_id"] == run_id and data["endpoint_id"] == endpoint["id"] and data["status"] == "succeeded"
    assert data["usage"]["tokens_input"] == r.json()["usage"]["tokens_input"]
    assert "key_id" in data


async def test_a_link_local_receiver_is_refused_at_registration(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    r = await http.post(
        "/api/webhooks", json={"url": "http://169.254.169.254/latest/meta-data", "events": ["run.failed"]}, headers=auth
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "url_not_allowed"
    assert r.json()["error"]["message"].startswith("url:")
    assert (await http.get("/api/webhooks", headers=auth)).json() == {"webhooks": []}  # nothing half-written


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.0.0.1:9/x", "events": ["run.exploded"]}, "events.0"),
        ({"url": "http://127.0.0.1:9/x", "events": []}, "events"),
        ({"url": "ftp://example.com/x", "events": ["run.failed"]}, "url"),
        ({"url": "http://127.0.0.1:9/x", "events": ["run.failed"], "description": "d" * 501}, "description"),
    ],
)
async def test_bad_webhooks_answer_422_naming_the_field(
    http: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    r = await http.post("/api/webhooks", json=body, headers=auth)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith(f"{field}:"), r.text


async def test_another_owner_sees_none_of_it(
    http: httpx.AsyncClient, auth: dict[str, str], make_auth: Callable[..., dict[str, str]], receiver: Receiver
) -> None:
    webhook = (await create(http, auth, receiver.url, ["charge.collected"]))["webhook"]
    delivery_id = (await http.post(f"/api/webhooks/{webhook['id']}/test", headers=auth)).json()["delivery"]["id"]
    other = make_auth("someone-else-entirely")
    base = f"/api/webhooks/{webhook['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("POST", f"{base}/test", None),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/deliveries/{delivery_id}/retry", None),
        ("DELETE", base, None),
    ]:
        r = await http.request(method, path, json=body, headers=other)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "webhook_not_found"
    assert webhook["id"] not in (await http.get("/api/webhooks", headers=other)).text
    assert (await http.get(base, headers=auth)).json()["webhook"]["enabled"] is True  # untouched


async def test_the_secret_is_shown_once_and_stored_encrypted(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver, stack: Stack
) -> None:
    created = await create(http, auth, receiver.url, ["run.failed"])
    secret, webhook_id = created["secret"], created["webhook"]["id"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    await http.post(f"/api/webhooks/{webhook_id}/test", headers=auth)
    await receiver.wait_for(1)
    answers = [
        await http.get("/api/webhooks", headers=auth),
        await http.get(f"/api/webhooks/{webhook_id}", headers=auth),
        await http.patch(f"/api/webhooks/{webhook_id}", json={"description": "renamed"}, headers=auth),
        await http.get(f"/api/webhooks/{webhook_id}/deliveries", headers=auth),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        assert secret not in r.text and secret[6:] not in r.text
    # A database dump reveals neither the secret nor its key bytes, in any schema.
    with psycopg.connect(stack.database_url) as conn:
        dump = " ".join(
            str(row)
            for table in ("webhooks.webhooks", "webhooks.deliveries", "keys.secrets")
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
        )
    assert secret[6:] not in dump and base64.b64decode(secret[6:]).hex() not in dump
    logs = "".join(p.read_text(errors="replace") for p in (stack.data_dir / "logs").glob("*.log"))
    assert secret[6:] not in logs


async def test_a_delivery_that_keeps_failing_gives_up_and_a_manual_retry_sends_it_again(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    receiver.script = [500] * 50
    webhook = (await create(http, auth, receiver.url, ["run.failed"]))["webhook"]
    delivery_id = (await http.post(f"/api/webhooks/{webhook['id']}/test", headers=auth)).json()["delivery"]["id"]
    (failed,) = await settled(http, auth, webhook["id"], 1)  # the (test-sized) retry window ran out
    assert failed["status"] == "failed" and len(failed["attempts"]) >= 3
    assert failed["next_attempt_at"] is None

    receiver.script = []
    seen = len(receiver.got)
    r = await http.post(f"/api/webhooks/{webhook['id']}/deliveries/{delivery_id}/retry", headers=auth)
    assert r.status_code == 202, r.text
    got = await receiver.wait_for(seen + 1)
    assert got[-1].headers["webhook-id"] == delivery_id
    (done,) = await settled(http, auth, webhook["id"], 1)
    assert done["status"] == "succeeded" and len(done["attempts"]) == len(failed["attempts"]) + 1


async def test_crud_patch_disable_and_delete(http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver) -> None:
    webhook = (await create(http, auth, receiver.url, ["run.failed"]))["webhook"]
    assert set(webhook) == {"id", "url", "events", "description", "enabled", "created_at"}
    r = await http.patch(
        f"/api/webhooks/{webhook['id']}", json={"events": ["charge.uncollected", "balance.low"]}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["webhook"]["events"] == ["charge.uncollected", "balance.low"]
    assert r.json()["webhook"]["description"] == "ops"  # partial
    r = await http.patch(f"/api/webhooks/{webhook['id']}", json={"url": "http://169.254.169.254/"}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "url_not_allowed"
    r = await http.delete(f"/api/webhooks/{webhook['id']}", headers=auth)
    assert r.status_code == 204
    assert (await http.get(f"/api/webhooks/{webhook['id']}", headers=auth)).status_code == 404


async def test_finished_deliveries_past_retention_are_deleted_with_their_attempts_and_pending_ones_stay(
    http: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver, stack: Stack
) -> None:
    webhook_id = (await create(http, auth, receiver.url, ["run.succeeded"]))["webhook"]["id"]
    sent = [(await http.post(f"/api/webhooks/{webhook_id}/test", headers=auth)).json()["delivery"]["id"]]
    await settled(http, auth, webhook_id, 1)
    sent.append((await http.post(f"/api/webhooks/{webhook_id}/test", headers=auth)).json()["delivery"]["id"])
    sent.append((await http.post(f"/api/webhooks/{webhook_id}/test", headers=auth)).json()["delivery"]["id"])
    await settled(http, auth, webhook_id, 3)
    old, old_pending, recent = sent
    # Two of them queued 31 days ago (past the default 30 days' retention), one of those still to be sent.
    with psycopg.connect(stack.database_url) as conn:
        conn.execute(
            "UPDATE webhooks.deliveries SET created_at = now() - interval '31 days' WHERE id = ANY(%s)",
            ([old, old_pending],),
        )
        conn.execute(
            "UPDATE webhooks.deliveries SET status = 'pending', next_attempt_at = now() + interval '1 day' "
            "WHERE id = %s",
            (old_pending,),
        )

    async with asyncio.timeout(10):  # the tests' stack purges every half second
        while True:
            if old not in [d["id"] for d in await deliveries(http, auth, webhook_id)]:
                break
            await asyncio.sleep(0.2)
    assert sorted(d["id"] for d in await deliveries(http, auth, webhook_id)) == sorted([old_pending, recent])
    with psycopg.connect(stack.database_url) as conn:
        attempts = conn.execute(
            "SELECT count(*) FROM webhooks.delivery_attempts WHERE delivery_id = %s", (old,)
        ).fetchone()
    assert attempts == (0,)
