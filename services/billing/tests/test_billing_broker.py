"""Wallet requests over NATS (what the gateway calls), served by two billing replicas in the `billing` queue group."""

from __future__ import annotations

import asyncio

import pytest

from agentry_common import rpc, subjects
from agentry_common.errors import ValidationFailed
from agentry_common.requests import Balance, Deposit, Deposited, GetBalance, ListTransactions, TransactionPage


async def test_a_user_who_never_paid_has_a_zero_balance_not_a_404(billing_replicas, nc, new_owner) -> None:
    balance = await rpc.call(nc, subjects.WALLET_BALANCE, GetBalance(owner_id=new_owner()), Balance)
    assert (balance.balance_cents, balance.currency, balance.uncollected_cents) == (0, "USD", 0)


async def test_50_concurrent_deposits_with_10_idempotency_keys_credit_exactly_10_times(
    billing_replicas, nc, ledger, new_owner
) -> None:
    o = new_owner()
    keys = {f"key-{i}": 500 + i for i in range(10)}
    requests = [Deposit(owner_id=o, amount_cents=amount, idempotency_key=key) for key, amount in keys.items()] * 5

    answers = await asyncio.gather(*(rpc.call(nc, subjects.WALLET_DEPOSIT, r, Deposited, timeout=30) for r in requests))

    originals = [a for a in answers if not a.replayed]
    assert len(originals) == 10
    by_key: dict[str, set[str]] = {}
    for request, answer in zip(requests, answers, strict=True):
        by_key.setdefault(request.idempotency_key, set()).add(answer.transaction.id)
        assert answer.transaction.amount_cents == request.amount_cents
    assert all(len(ids) == 1 for ids in by_key.values())  # every retry answered with its original
    balance = await rpc.call(nc, subjects.WALLET_BALANCE, GetBalance(owner_id=o), Balance)
    assert balance.balance_cents == balance.lifetime_deposited_cents == sum(keys.values())
    assert len([e for e in await ledger.entries(o) if e.kind == "deposit"]) == 10
    assert await ledger.drift([o]) == []


async def test_the_same_key_with_a_different_body_answers_422_idempotency_key_reused(
    billing_replicas, nc, new_owner
) -> None:
    o = new_owner()
    await rpc.call(nc, subjects.WALLET_DEPOSIT, Deposit(owner_id=o, amount_cents=500, idempotency_key="k"), Deposited)
    with pytest.raises(ValidationFailed) as refused:
        cmd = Deposit(owner_id=o, amount_cents=600, idempotency_key="k")
        await rpc.call(nc, subjects.WALLET_DEPOSIT, cmd, Deposited)
    assert (refused.value.status_code, refused.value.code) == (422, "idempotency_key_reused")


@pytest.mark.parametrize("amount", [0, -500])
async def test_a_deposit_of_nothing_or_less_answers_422(billing_replicas, nc, amount: int, new_owner) -> None:
    with pytest.raises(ValidationFailed):
        cmd = Deposit(owner_id=new_owner(), amount_cents=amount, idempotency_key="k")
        await rpc.call(nc, subjects.WALLET_DEPOSIT, cmd, Deposited)


async def test_transactions_page_with_an_opaque_cursor_and_refuse_an_out_of_range_limit(
    billing_replicas, nc, new_owner
) -> None:
    o = new_owner()
    for i in range(3):
        cmd = Deposit(owner_id=o, amount_cents=500 + i, idempotency_key=str(i), kind="admin_credit", actor_id="op")
        await rpc.call(nc, subjects.WALLET_DEPOSIT, cmd, Deposited)
    first = await rpc.call(nc, subjects.WALLET_TRANSACTIONS, ListTransactions(owner_id=o, limit=2), TransactionPage)
    assert [t.amount_cents for t in first.transactions] == [502, 501] and first.next_cursor
    rest = await rpc.call(
        nc,
        subjects.WALLET_TRANSACTIONS,
        ListTransactions(owner_id=o, limit=2, cursor=first.next_cursor),
        TransactionPage,
    )
    assert [(t.kind, t.amount_cents) for t in rest.transactions] == [("admin_credit", 500)]
    assert rest.next_cursor is None
    for limit in (0, 101):
        with pytest.raises(ValidationFailed):
            await rpc.call(nc, subjects.WALLET_TRANSACTIONS, ListTransactions(owner_id=o, limit=limit), TransactionPage)
