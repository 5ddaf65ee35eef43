"""Money Stripe takes back (refunds, disputes) and money it brings in settling what is owed: the ledger adds up
to the balance, the balance never goes below zero, and what it could not cover is taken from the next credit."""

from __future__ import annotations

import httpx


async def _wallet(ledger, owner: str) -> tuple[int, list[tuple[str, int]]]:
    entries = await ledger.entries(owner)
    assert all(e.balance_after_cents >= 0 for e in entries)
    wallet = await ledger.wallet(owner)
    assert wallet.balance_cents == sum(e.amount_cents for e in entries)  # Σ ledger = balance
    return wallet.balance_cents, [(e.kind, e.amount_cents) for e in entries]


async def test_refunds_and_disputes_take_money_back_never_below_zero_and_the_rest_from_the_next_credits(
    payments, owner, ledger, events
) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        _, first = await payments.paid_deposit(http, owner, 2000)
        runs = [events.completed(owner, price=500) for _ in range(3)]
        await events.publish(runs)
        await ledger.wait_for_charges([r.run_id for r in runs])
        assert (await _wallet(ledger, owner))[0] == 500

        refund = payments.stripe.charge(first, amount_refunded=1200)
        assert (await payments.post_event(http, payments.event("charge.refunded", refund))).status_code == 200
        # Stripe sends the same refund again under another event id: the refund level is taken once.
        assert (await payments.post_event(http, payments.event("charge.refunded", refund))).status_code == 200
        balance, entries = await _wallet(ledger, owner)
        assert balance == 0 and entries[-1] == ("refund", -500)  # up to the balance; 700 owed
        more = payments.stripe.charge(first, amount_refunded=1500)  # a second partial refund: 300 more
        assert (await payments.post_event(http, payments.event("charge.refunded", more))).status_code == 200
        assert (await _wallet(ledger, owner))[0] == 0

        _, second = await payments.paid_deposit(http, owner, 800)  # pays 800 of the 1000 owed
        balance, entries = await _wallet(ledger, owner)
        assert balance == 0 and entries[-3:] == [("deposit", 800), ("refund", -700), ("refund", -100)]
        dispute = payments.stripe.dispute(second, 800)
        assert (await payments.post_event(http, payments.event("charge.dispute.created", dispute))).status_code == 200

        await payments.paid_deposit(http, owner, 1500)  # 200 refund + 800 dispute still owed
        balance, entries = await _wallet(ledger, owner)
        assert balance == 500
        assert entries[-3:] == [("deposit", 1500), ("refund", -200), ("dispute", -800)]
        assert sum(a for k, a in entries if k == "refund") == -1500
        owed = await ledger.rows("SELECT sum(owed_cents) AS owed FROM billing.reversals WHERE owner_id = :o", o=owner)
        assert owed[0].owed == 0
        txns = await http.get(f"{payments.gateway}/api/balance/transactions?limit=100", headers=payments.auth(owner))
        assert {t["kind"] for t in txns.json()["transactions"]} >= {"refund", "dispute", "deposit", "run_charge"}
        assert await ledger.drift([owner]) == []


async def test_uncollected_charges_are_settled_by_a_stripe_funded_credit(payments, owner, ledger, events) -> None:
    runs = [events.completed(owner, price=300) for _ in range(3)]
    await events.publish(runs)
    charges = await ledger.wait_for_charges([r.run_id for r in runs])
    assert {c.status for c in charges.values()} == {"uncollected"}
    async with httpx.AsyncClient(timeout=60) as http:
        await payments.paid_deposit(http, owner, 1000)
        balance = (await http.get(f"{payments.gateway}/api/balance", headers=payments.auth(owner))).json()
    assert (balance["balance_cents"], balance["uncollected_cents"]) == (100, 0)
    charges = await ledger.charges(r.run_id for r in runs)
    assert {c.status for c in charges.values()} == {"settled"}
    assert [k for k, _ in (await _wallet(ledger, owner))[1]] == ["deposit", "settlement", "settlement", "settlement"]
    assert await ledger.drift([owner]) == []
