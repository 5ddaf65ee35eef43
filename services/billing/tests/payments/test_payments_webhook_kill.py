"""kill -9 of a billing replica while Stripe's webhooks are being handled: Stripe retries what got no 2xx, the
other replica takes over, and every deposit is still credited exactly once."""

from __future__ import annotations

import asyncio
import uuid

import httpx


async def test_killing_a_replica_mid_webhooks_loses_no_credit_and_makes_none_twice(
    payments, ledger, eventually
) -> None:
    owners = [f"user-{uuid.uuid4().hex[:12]}" for _ in range(15)]
    async with httpx.AsyncClient(timeout=60) as http:
        payloads = []
        for owner in owners:
            deposit = (await payments.deposit(http, owner, 1000)).json()["deposit"]
            session, intent = payments.stripe.pay(deposit["checkout_url"].rsplit("/", 1)[1])
            payloads += [payments.event("checkout.session.completed", session),
                         payments.event("payment_intent.succeeded", intent)]  # fmt: skip

        async def deliver(payload: str) -> None:
            """Stripe's delivery: retried until a 2xx (here without its hours-long back-off)."""
            while True:
                try:
                    if (await payments.post_event(http, payload)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)

        deliveries = [asyncio.create_task(deliver(p)) for p in payloads * 3]  # every event thrice, at once

        async def some_credited() -> bool:
            rows = await ledger.rows(
                "SELECT count(*) AS n FROM billing.ledger_entries WHERE owner_id = ANY(:o)", o=owners
            )
            return rows[0].n > 0

        assert await eventually(some_credited, 60, 0.01)
        victim = payments.replicas[0]
        victim.stop(kill=True)  # SIGKILL: its open transactions roll back, its requests get no answer
        await asyncio.wait_for(asyncio.gather(*deliveries), 180)
        await asyncio.to_thread(victim.restart)

    for owner in owners:
        entries = await ledger.entries(owner)
        assert [(e.kind, e.amount_cents) for e in entries] == [("deposit", 1000)], owner
        assert (await ledger.wallet(owner)).balance_cents == 1000
    assert await ledger.drift(owners) == []
