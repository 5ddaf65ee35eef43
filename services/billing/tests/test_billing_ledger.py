"""The database itself refuses any write that would make a wallet's ledger disagree with its balance, even
one that bypasses the billing code (models.py and its migration)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry_billing import service
from agentry_billing.domain import ChargeRun
from agentry_common.requests import Deposit


@pytest.fixture
async def funded(uow) -> str:
    """A wallet holding 100 cents (one deposit entry) and one collected 30-cent charge."""
    owner = f"user-{uuid.uuid4().hex[:12]}"
    async with uow() as repo:
        await service.credit_wallet(repo, Deposit(owner_id=owner, amount_cents=100, idempotency_key="k"))
        await service.charge_runs(repo, [ChargeRun("evt_1", f"run_{uuid.uuid4().hex}", "aep_1", owner, 30, Decimal(0))])
    return owner


async def _refused(engine: AsyncEngine, *statements: str, **params: object) -> str:
    with pytest.raises(DBAPIError) as caught:
        async with engine.connect() as conn, conn.begin():
            for sql in statements:
                await conn.execute(text(sql), params)
    return str(caught.value.orig)


async def test_a_balance_changed_without_a_ledger_entry_is_refused_at_commit(
    billing_engine: AsyncEngine, funded: str
) -> None:
    message = await _refused(
        billing_engine,
        "UPDATE billing.wallets SET balance_cents = balance_cents + 50,"
        " lifetime_deposited_cents = lifetime_deposited_cents + 50 WHERE owner_id = :o",
        o=funded,
    )
    assert "balance_is_last_entry" in message


async def test_an_entry_posted_without_moving_its_wallet_is_refused(billing_engine: AsyncEngine, funded: str) -> None:
    message = await _refused(
        billing_engine,
        "INSERT INTO billing.credits (id, scope, idempotency_key, fingerprint, owner_id, kind, amount_cents,"
        " balance_after_cents) VALUES (:c, :o, 'x', 'f', :o, 'deposit', 10, 80)",
        "INSERT INTO billing.ledger_entries (id, owner_id, entry_no, kind, amount_cents, balance_after_cents,"
        " prev_entry_no, prev_balance_after_cents, credit_id)"
        " VALUES ('txn_x', :o, 3, 'deposit', 10, 80, 2, 70, :c)",
        o=funded,
        c=f"crd_x{funded}",
    )
    assert "without moving their wallet" in message


async def test_an_entry_whose_running_balance_does_not_add_up_is_refused(
    billing_engine: AsyncEngine, funded: str
) -> None:
    message = await _refused(
        billing_engine,
        "INSERT INTO billing.credits (id, scope, idempotency_key, fingerprint, owner_id, kind, amount_cents,"
        " balance_after_cents) VALUES (:c, :o, 'y', 'f', :o, 'deposit', 10, 90)",
        "UPDATE billing.wallets SET balance_cents = 90, lifetime_deposited_cents = 120, last_entry_no = 3"
        " WHERE owner_id = :o",
        "INSERT INTO billing.ledger_entries (id, owner_id, entry_no, kind, amount_cents, balance_after_cents,"
        " prev_entry_no, prev_balance_after_cents, credit_id)"
        " VALUES ('txn_y', :o, 3, 'deposit', 10, 90, 2, 80, :c)",
        o=funded,
        c=f"crd_y{funded}",
    )
    assert "does not follow its predecessor" in message


async def test_a_debit_that_does_not_match_its_charge_is_refused(billing_engine, funded: str) -> None:
    message = await _refused(
        billing_engine,
        "INSERT INTO billing.charges (id, run_id, owner_id, endpoint_id, amount_cents, status, event_id)"
        " VALUES (:c, :c, :o, 'aep_1', 5, 'collected', 'evt_1')",
        "UPDATE billing.wallets SET balance_cents = 69, lifetime_spent_cents = 31, last_entry_no = 3"
        " WHERE owner_id = :o",
        "INSERT INTO billing.ledger_entries (id, owner_id, entry_no, kind, amount_cents, balance_after_cents,"
        " prev_entry_no, prev_balance_after_cents, charge_id)"
        " VALUES ('txn_w', :o, 3, 'run_charge', -1, 69, 2, 70, :c)",
        o=funded,
        c=f"chg_w{funded}",
    )
    assert "does not match its charge" in message


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE billing.ledger_entries SET amount_cents = amount_cents WHERE owner_id = :o",
        "DELETE FROM billing.ledger_entries WHERE owner_id = :o",
    ],
    ids=["update", "delete"],
)
async def test_the_ledger_is_append_only(billing_engine: AsyncEngine, funded: str, statement: str) -> None:
    assert "append-only" in await _refused(billing_engine, statement, o=funded)


async def test_a_wallet_can_never_go_negative(billing_engine: AsyncEngine, funded: str) -> None:
    message = await _refused(
        billing_engine,
        "UPDATE billing.wallets SET balance_cents = -1, lifetime_spent_cents = lifetime_deposited_cents + 1"
        " WHERE owner_id = :o",
        o=funded,
    )
    assert "balance_not_negative" in message


async def test_a_charge_can_move_money_only_once(billing_engine: AsyncEngine, funded: str) -> None:
    message = await _refused(
        billing_engine,
        "UPDATE billing.wallets SET balance_cents = 40, lifetime_spent_cents = 60, last_entry_no = 3"
        " WHERE owner_id = :o",
        "INSERT INTO billing.ledger_entries (id, owner_id, entry_no, kind, amount_cents, balance_after_cents,"
        " prev_entry_no, prev_balance_after_cents, charge_id, run_id)"
        " SELECT 'txn_z', owner_id, 3, 'settlement', -30, 40, 2, 70, charge_id, run_id"
        " FROM billing.ledger_entries WHERE owner_id = :o AND entry_no = 2",
        o=funded,
    )
    assert "uq_ledger_entries_charge_id" in message


async def test_the_untouched_wallet_still_reconciles(ledger, funded: str) -> None:
    assert await ledger.drift([funded]) == []
    wallet = await ledger.wallet(funded)
    assert (wallet.balance_cents, wallet.lifetime_deposited_cents, wallet.lifetime_spent_cents) == (70, 100, 30)
