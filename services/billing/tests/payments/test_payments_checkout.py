"""Stripe deposits end to end: gateway → billing (two replicas, stripe mode) → fake Stripe on loopback, and
Stripe's signed webhook back through the gateway."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
from nats.js.api import ConsumerConfig, DeliverPolicy

from agentry_common import subjects


async def _balance(http: httpx.AsyncClient, payments, owner: str) -> dict:
    answer = await http.get(f"{payments.gateway}/api/balance", headers=payments.auth(owner))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _deposit_events(nc, deposit_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The `billing.deposit.succeeded` events stored for this deposit."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.BILLING_EVENTS_STREAM.name, subjects_filter=subjects.DEPOSIT_SUCCEEDED)
    count = (info.state.subjects or {}).get(subjects.DEPOSIT_SUCCEEDED, 0)
    sub = await js.subscribe(subjects.DEPOSIT_SUCCEEDED, ordered_consumer=True,
                             config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))  # fmt: skip
    try:
        bodies = [orjson.loads((await sub.next_msg(timeout=10)).data) for _ in range(count)]
    finally:
        await sub.unsubscribe()
    return [b for b in bodies if b["deposit_id"] == deposit_id]


async def test_a_deposit_opens_checkout_and_the_signed_webhook_credits_it_once_whatever_the_replays(
    payments, owner, ledger, nc
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await payments.deposit(http, owner, 2500, key="top-up-1")
        assert answer.status_code == 201, answer.text
        deposit = answer.json()["deposit"]
        assert deposit["id"].startswith("dep_") and deposit["status"] == "pending"
        assert deposit["amount_cents"] == 2500
        assert deposit["checkout_url"].startswith(f"{payments.stripe.url}/pay/cs_test_")
        session_id = deposit["checkout_url"].rsplit("/", 1)[1]
        # What billing asked of Stripe (the fake held every parameter against the library's TypedDicts).
        sent = next(r for r in payments.stripe.requests if r.params.get("client_reference_id") == deposit["id"])
        assert sent.params["mode"] == "payment"
        assert sent.params["metadata"]["deposit_id"] == deposit["id"]
        assert sent.params["line_items"][0]["price_data"] == {
            "currency": "usd", "unit_amount": "2500", "product_data": {"name": "Agentry wallet top-up"},
        }  # fmt: skip
        assert sent.params["payment_intent_data"]["setup_future_usage"] == "off_session"
        assert sent.params["customer"].startswith("cus_")
        assert sent.params["success_url"].startswith("https://agentry.example/")
        assert sent.idempotency_key == f"agentry-checkout-{deposit['id']}"
        assert payments.stripe.errors == []

        again = await payments.deposit(http, owner, 2500, key="top-up-1")  # a retried request: the same page
        assert again.status_code == 201 and again.json()["deposit"]["id"] == deposit["id"]
        assert again.json()["deposit"]["checkout_url"] == deposit["checkout_url"]
        other = await payments.deposit(http, owner, 900, key="top-up-1")
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        assert (await _balance(http, payments, owner))["balance_cents"] == 0  # nothing credited before payment

        listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
        assert [(d["id"], d["status"]) for d in listed.json()["deposits"]] == [(deposit["id"], "pending")]

        session, _ = payments.stripe.pay(session_id)
        payload = payments.event("checkout.session.completed", session)
        # Stripe retries; here the same event arrives five times at once, spread over both billing replicas.
        replies = await asyncio.gather(*(payments.post_event(http, payload) for _ in range(5)))
        assert [(r.status_code, r.json()) for r in replies] == [(200, {"received": True})] * 5
        later = await payments.post_event(http, payload)  # and once more, after the fact
        assert later.status_code == 200

        balance = await _balance(http, payments, owner)
        assert (balance["balance_cents"], balance["lifetime_deposited_cents"]) == (2500, 2500)
        entries = await ledger.entries(owner)
        assert [(e.kind, e.amount_cents) for e in entries] == [("deposit", 2500)]
        listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
        [row] = listed.json()["deposits"]
        assert (row["id"], row["status"], row["checkout_url"]) == (deposit["id"], "succeeded", None)
        txns = await http.get(f"{payments.gateway}/api/balance/transactions", headers=payments.auth(owner))
        assert [(t["kind"], t["amount_cents"]) for t in txns.json()["transactions"]] == [("deposit", 2500)]
        assert await ledger.drift([owner]) == []
        # Announced once (owners' `deposit.succeeded` webhooks), whatever the replays.
        [announced] = await _deposit_events(nc, deposit["id"])
        assert (announced["owner_id"], announced["amount_cents"]) == (owner, 2500)


async def test_a_tampered_or_stale_signature_is_refused_and_nothing_is_written(payments, owner, ledger) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await payments.deposit(http, owner, 1000)
        deposit = answer.json()["deposit"]
        session, _ = payments.stripe.pay(deposit["checkout_url"].rsplit("/", 1)[1])
        payload = payments.event("checkout.session.completed", session)
        tampered = payload.replace('"amount_total":1000', '"amount_total":100000')
        assert tampered != payload
        stale = payments.sign(payload, at=int(time.time()) - 3600)
        for body, signature in (
            (tampered, payments.sign(payload)),  # signed body ≠ sent body
            (payload, stale),  # a captured request replayed an hour later
            (payload, payments.sign(payload, secret="whsec_someone_else")),
            (payload, ""),
        ):
            reply = await payments.post_event(http, body, signature)
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["code"] == "invalid_signature"
            assert "sk-test-secret" not in reply.text
        event_id = __import__("json").loads(payload)["id"]
        assert await ledger.rows("SELECT 1 FROM billing.stripe_events WHERE id = :id", id=event_id) == []
        assert await ledger.wallet(owner) is None or (await ledger.wallet(owner)).balance_cents == 0
        listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
        assert [d["status"] for d in listed.json()["deposits"]] == ["pending"]

        ok = await payments.post_event(http, payload)  # the genuine delivery still counts
        assert ok.status_code == 200
        assert (await _balance(http, payments, owner))["balance_cents"] == 1000


async def test_an_abandoned_checkout_is_marked_expired(payments, owner) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        deposit = (await payments.deposit(http, owner, 700)).json()["deposit"]
        session = dict(payments.stripe.sessions[deposit["checkout_url"].rsplit("/", 1)[1]])
        session = {k: v for k, v in session.items() if not k.startswith("_")} | {"status": "expired"}
        assert (await payments.post_event(http, payments.event("checkout.session.expired", session))).status_code == 200
        listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
        assert [(d["status"], d["checkout_url"]) for d in listed.json()["deposits"]] == [("expired", None)]
        assert (await _balance(http, payments, owner))["balance_cents"] == 0


async def test_when_stripe_is_down_a_deposit_answers_502_and_the_same_key_works_once_it_is_back(
    payments, owner
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        payments.stripe.down = True
        try:
            answer = await payments.deposit(http, owner, 1500, key="while-down")
        finally:
            payments.stripe.down = False
        assert answer.status_code == 502, answer.text
        assert answer.json()["error"]["code"] == "payment_provider_error"
        assert "sk-test-secret" not in answer.text
        again = await payments.deposit(http, owner, 1500, key="while-down")
        assert again.status_code == 201, again.text
        assert again.json()["deposit"]["checkout_url"].startswith(payments.stripe.url)
        listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
        assert [d["id"] for d in listed.json()["deposits"]] == [again.json()["deposit"]["id"]]
