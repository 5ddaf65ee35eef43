"""Auto-recharge: a charge that takes the balance below the threshold starts one off-session payment on the card
the first Checkout saved — one per crossing, also when 20 charges land at once on two replicas."""

from __future__ import annotations

import asyncio

import httpx


async def test_auto_recharge_starts_one_payment_per_crossing_under_concurrent_charges(
    payments, owner, ledger, events, eventually
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        url = f"{payments.gateway}/api/balance/auto-recharge"
        before = (await http.get(url, headers=payments.auth(owner))).json()
        assert before == {"enabled": False, "threshold_cents": 0, "amount_cents": 0, "has_payment_method": False}
        _, paid = await payments.paid_deposit(http, owner, 3000)  # saves the card
        settings = {"enabled": True, "threshold_cents": 1000, "amount_cents": 2000}
        answer = await http.put(url, json=settings, headers=payments.auth(owner))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {**settings, "has_payment_method": True}
        bad = await http.put(url, json={**settings, "amount_cents": 1}, headers=payments.auth(owner))
        assert bad.status_code == 422
        [customer] = await ledger.rows("SELECT * FROM billing.payment_customers WHERE owner_id = :o", o=owner)
        assert customer.payment_method_id == paid["payment_method"]

        async def intents(n: int) -> list:
            found = payments.stripe.off_session_intents(customer.customer_id)
            return found if len(found) >= n else []

        for crossing, price in ((1, 120), (2, 100)):
            runs = [events.completed(owner, price=price) for _ in range(20)]
            await events.publish(runs)  # 20 at once, batches of 5 over two replicas
            await ledger.wait_for_charges([r.run_id for r in runs])
            started = await eventually(lambda n=crossing: intents(n), 60)
            await asyncio.sleep(2)  # a second payment for the same crossing would have been started by now
            started = payments.stripe.off_session_intents(customer.customer_id)
            assert len(started) == crossing
            intent = started[-1]
            sent = [r for r in payments.stripe.requests if r.path == "/v1/payment_intents"][-1]
            assert sent.idempotency_key == f"agentry-auto-recharge-{owner}-{crossing}"
            assert (sent.params["off_session"], sent.params["confirm"]) == ("true", "true")
            assert sent.params["payment_method"] == customer.payment_method_id
            assert intent["amount"] == 2000
            balance = (await ledger.wallet(owner)).balance_cents
            assert balance == 3000 - 2400 if crossing == 1 else 2600 - 2000
            # Not credited until Stripe confirms the payment.
            reply = await payments.post_event(http, payments.event("payment_intent.succeeded", intent))
            assert reply.status_code == 200
            assert (await ledger.wallet(owner)).balance_cents == balance + 2000

        listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
        recharges = [d for d in listed.json()["deposits"] if d["source"] == "auto_recharge"]
        assert [d["status"] for d in recharges] == ["succeeded", "succeeded"]
        assert payments.stripe.errors == []
        assert await ledger.drift([owner]) == []


async def test_a_declined_card_fails_the_recharge_and_credits_nothing(
    payments, owner, ledger, events, eventually
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        await payments.paid_deposit(http, owner, 1000)
        settings = {"enabled": True, "threshold_cents": 800, "amount_cents": 5000}
        url = f"{payments.gateway}/api/balance/auto-recharge"
        assert (await http.put(url, json=settings, headers=payments.auth(owner))).status_code == 200
        [customer] = await ledger.rows("SELECT * FROM billing.payment_customers WHERE owner_id = :o", o=owner)
        payments.stripe.declined_customers.add(customer.customer_id)
        runs = [events.completed(owner, price=100) for _ in range(5)]
        await events.publish(runs)
        await ledger.wait_for_charges([r.run_id for r in runs])

        async def recharge_failed() -> list:
            listed = await http.get(f"{payments.gateway}/api/balance/deposits", headers=payments.auth(owner))
            return [d for d in listed.json()["deposits"] if d["source"] == "auto_recharge" and d["status"] == "failed"]

        assert len(await eventually(recharge_failed, 60)) == 1
        assert (await ledger.wallet(owner)).balance_cents == 500
