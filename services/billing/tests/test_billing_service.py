"""Billing use cases in-process against the real database: charging once, credits once, settlement, paging."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal

import pytest

from agentry_billing import service
from agentry_billing.domain import ChargeRun
from agentry_common.errors import ValidationFailed
from agentry_common.requests import Deposit


def run_of(owner_id: str, price: int = 5) -> ChargeRun:
    return ChargeRun(f"evt_{uuid.uuid4().hex}", f"run_{uuid.uuid4().hex}", "aep_1", owner_id, price, Decimal("0.5"))


async def deposit(uow, owner_id: str, amount: int, key: str | None = None, **fields: object):
    async with uow() as repo:
        cmd = Deposit(owner_id=owner_id, amount_cents=amount, idempotency_key=key or uuid.uuid4().hex, **fields)
        return await service.credit_wallet(repo, cmd)


async def charge(uow, runs: list[ChargeRun]) -> service.ChargeBatch:
    async with uow() as repo:
        return await service.charge_runs(repo, runs)


async def test_a_covered_run_is_debited_once_and_its_token_cost_recorded(uow, ledger, new_owner) -> None:
    o = new_owner()
    await deposit(uow, o, 100)
    run = run_of(o, 30)
    first = await charge(uow, [run])
    again = await charge(uow, [run, run])
    assert [x.state for x in first.new] == ["collected"] and again.new == []
    assert again.duplicates == 2 and [x.charge_id for x in again.outcomes] == [first.new[0].charge_id]
    wallet = await ledger.wallet(o)
    assert (wallet.balance_cents, wallet.lifetime_spent_cents) == (70, 30)
    charges = await ledger.charges([run.run_id])
    assert charges[run.run_id].cost_cents == Decimal("0.5")
    assert [e.kind for e in await ledger.entries(o)] == ["deposit", "run_charge"]


async def test_a_run_the_balance_does_not_cover_is_uncollected_and_the_wallet_untouched(uow, ledger, new_owner) -> None:
    o = new_owner()
    await deposit(uow, o, 3)
    batch = await charge(uow, [run_of(o, 5)])
    assert [x.state for x in batch.new] == ["uncollected"]
    wallet = await ledger.wallet(o)
    assert (wallet.balance_cents, wallet.lifetime_spent_cents, wallet.uncollected_cents) == (3, 0, 5)
    assert [e.kind for e in await ledger.entries(o)] == ["deposit"]


async def test_a_charge_for_an_owner_without_a_wallet_is_uncollected(uow, ledger, new_owner) -> None:
    o = new_owner()
    batch = await charge(uow, [run_of(o, 5)])
    assert [x.state for x in batch.new] == ["uncollected"]
    async with uow() as repo:
        balance = await service.balance(repo, o)
    assert (balance.balance_cents, balance.uncollected_cents) == (0, 5)


async def test_a_batch_charges_runs_in_order_until_the_money_runs_out(uow, ledger, new_owner) -> None:
    o = new_owner()
    await deposit(uow, o, 12)
    runs = [run_of(o, 5), run_of(o, 5), run_of(o, 5), run_of(o, 2)]
    batch = await charge(uow, runs)
    assert [x.state for x in batch.new] == ["collected", "collected", "uncollected", "collected"]
    assert (await ledger.wallet(o)).balance_cents == 0
    assert await ledger.drift([o]) == []


async def test_concurrent_batches_with_the_same_runs_charge_each_run_exactly_once(uow, ledger, new_owner) -> None:
    owners = [new_owner() for _ in range(6)]
    for o in owners:
        await deposit(uow, o, 1_000)
    runs = [run_of(random.choice(owners), random.randint(1, 20)) for _ in range(200)]
    batches = [random.sample(runs, len(runs)) for _ in range(4)]  # same runs, different orders, in parallel
    results = await asyncio.gather(*(charge(uow, b) for b in batches))
    assert sum(len(r.new) for r in results) == len(runs)
    assert sum(r.duplicates for r in results) == 3 * len(runs)
    for o in owners:
        spent = sum(r.price_cents for r in runs if r.owner_id == o)
        wallet = await ledger.wallet(o)
        assert wallet.balance_cents == 1_000 - spent
        assert len([e for e in await ledger.entries(o) if e.kind == "run_charge"]) == sum(r.owner_id == o for r in runs)
    assert await ledger.drift(owners) == []


async def test_a_credit_settles_uncollected_charges_oldest_first_and_each_only_once(uow, ledger, new_owner) -> None:
    o = new_owner()
    runs = [run_of(o, 5), run_of(o, 7), run_of(o, 1)]
    for run in runs:  # one at a time, so their age is their order
        await charge(uow, [run])
    credited = await deposit(uow, o, 10)
    assert [x.run_id for x in credited.settled] == [runs[0].run_id]  # 7 does not fit in 5; 1 must wait behind it
    assert credited.deposited.balance_cents == 5
    again = await deposit(uow, o, 10)
    assert [x.run_id for x in again.settled] == [runs[1].run_id, runs[2].run_id]
    assert again.deposited.balance_cents == 7
    states = await ledger.charges([r.run_id for r in runs])
    assert {s.status for s in states.values()} == {"settled"}
    settlements = [e for e in await ledger.entries(o) if e.kind == "settlement"]
    assert sorted(e.run_id for e in settlements) == sorted(r.run_id for r in runs)
    wallet = await ledger.wallet(o)
    assert (wallet.uncollected_cents, wallet.lifetime_spent_cents, wallet.lifetime_deposited_cents) == (0, 13, 20)
    assert await ledger.drift([o]) == []


async def test_the_same_idempotency_key_and_request_answers_the_original_credit(uow, ledger, new_owner) -> None:
    o = new_owner()
    first = await deposit(uow, o, 500, key="k-1")
    await deposit(uow, o, 700)
    again = await deposit(uow, o, 500, key="k-1")
    assert again.deposited.replayed and not first.deposited.replayed
    assert again.deposited.transaction == first.deposited.transaction
    assert again.deposited.balance_cents == 500  # the original answer, not today's balance
    assert (await ledger.wallet(o)).balance_cents == 1_200


@pytest.mark.parametrize("change", [{"amount": 501}, {"reason": "other"}], ids=["amount", "reason"])
async def test_the_same_idempotency_key_with_a_different_request_is_refused(uow, ledger, change, new_owner) -> None:
    o = new_owner()
    await deposit(uow, o, 500, key="k-2", reason="top-up")
    with pytest.raises(ValidationFailed) as refused:
        await deposit(uow, o, change.get("amount", 500), key="k-2", reason=change.get("reason", "top-up"))
    assert refused.value.code == "idempotency_key_reused"
    assert (await ledger.wallet(o)).balance_cents == 500


async def test_idempotency_keys_belong_to_whoever_asked(uow, ledger, new_owner) -> None:
    alice, bob, admin = new_owner(), new_owner(), new_owner()
    await deposit(uow, alice, 500, key="same")
    await deposit(uow, bob, 500, key="same")  # another user's key space
    await deposit(uow, alice, 100, key="same", kind="admin_credit", actor_id=admin, reason="goodwill")
    with pytest.raises(ValidationFailed):  # the admin reusing their key for another wallet
        await deposit(uow, bob, 100, key="same", kind="admin_credit", actor_id=admin, reason="goodwill")
    assert (await ledger.wallet(alice)).balance_cents == 600
    assert (await ledger.wallet(bob)).balance_cents == 500


@pytest.mark.parametrize("amount", [0, -5])
async def test_a_credit_of_nothing_or_less_is_refused(uow, amount: int, new_owner) -> None:
    with pytest.raises(ValidationFailed):
        await deposit(uow, new_owner(), amount)


async def test_transactions_page_newest_first_through_credits_charges_and_settlements(uow, new_owner) -> None:
    o = new_owner()
    await deposit(uow, o, 10, key="a")
    runs = [run_of(o, 4) for _ in range(4)]
    for run in runs:
        await charge(uow, [run])
    await deposit(uow, o, 4, key="b")  # settles the third run's charge; the fourth stays uncollected
    seen, cursor = [], None
    while True:
        async with uow() as repo:
            page = await service.transactions(repo, o, 2, cursor)
        seen += page.transactions
        cursor = page.next_cursor
        if cursor is None:
            break
    kinds = [(t.kind, t.status, t.amount_cents) for t in seen]
    assert kinds == [
        ("settlement", "collected", -4),
        ("deposit", "completed", 4),
        ("run_charge", "uncollected", -4),
        ("run_charge", "settled", -4),
        ("run_charge", "collected", -4),
        ("run_charge", "collected", -4),
        ("deposit", "completed", 10),
    ]
    assert len({t.id for t in seen}) == len(seen)
    assert seen[0].run_id == runs[2].run_id
    with pytest.raises(ValidationFailed) as bad:
        async with uow() as repo:
            await service.transactions(repo, o, 2, "not-a-cursor")
    assert bad.value.code == "invalid_cursor"


async def test_charges_report_collected_uncollected_and_nothing_for_unknown_runs(uow, new_owner) -> None:
    o = new_owner()
    await deposit(uow, o, 5)
    paid, unpaid = run_of(o, 5), run_of(o, 5)
    await charge(uow, [paid, unpaid])
    async with uow() as repo:
        charges = await service.charges(repo, [paid.run_id, unpaid.run_id, "run_unknown"])
    assert {k: (v.amount_cents, v.status) for k, v in charges.charges.items()} == {
        paid.run_id: (5, "collected"),
        unpaid.run_id: (5, "uncollected"),
    }
    await deposit(uow, o, 5)
    async with uow() as repo:
        charges = await service.charges(repo, [unpaid.run_id])
    assert charges.charges[unpaid.run_id].status == "collected"  # settled later: collected all the same


async def test_a_user_without_a_wallet_has_a_zero_balance(uow, new_owner) -> None:
    async with uow() as repo:
        balance = await service.balance(repo, new_owner())
    assert balance.model_dump() == {
        "balance_cents": 0,
        "currency": "USD",
        "lifetime_deposited_cents": 0,
        "lifetime_spent_cents": 0,
        "uncollected_cents": 0,
    }
