"""The charge consumer, with billing running as real processes on real NATS and PostgreSQL: every priced run
is charged exactly once through replays, concurrent replicas and kill -9, and its outcome is announced."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from decimal import Decimal

from agentry_billing import service
from agentry_billing.domain import ChargeRun
from agentry_common import rpc, subjects
from agentry_common.events import RunError, RunFailed
from agentry_common.requests import Balance, Charges, Deposit, Deposited, GetBalance, GetCharges

MAIN = subjects.BILLING_CONSUMER


async def test_each_run_published_three_times_to_two_replicas_debits_its_wallet_exactly_once(
    billing_replicas, events, ledger, uow, new_owner, fund
) -> None:
    owners = [new_owner() for _ in range(10)]
    for o in owners:
        await fund(o, 10_000)
    runs = [events.completed(random.choice(owners), random.randint(1, 25)) for _ in range(400)]
    same_msg_id = [events.replay(r) for r in runs]  # what a runner retrying its publish would send
    fresh_msg_id = [events.replay(r) for r in runs]  # a replay outside the broker's de-duplication window
    random.shuffle(same_msg_id)
    random.shuffle(fresh_msg_id)

    await events.publish(runs)
    acks = await events.publish(same_msg_id)
    replay_acks = await events.publish(fresh_msg_id, fresh_msg_id=True)
    assert all(a.duplicate for a in acks), "the broker de-duplicates a replay within its window"
    assert not any(a.duplicate for a in replay_acks), "these replays reach billing: only the database can stop them"

    charges = await ledger.wait_for_charges([r.run_id for r in runs])
    await events.quiescent(MAIN)
    assert {c.status for c in charges.values()} == {"collected"}
    for o in owners:
        mine = [r for r in runs if r.owner_id == o]
        wallet = await ledger.wallet(o)
        assert wallet.balance_cents == 10_000 - sum(r.price_per_run_cents for r in mine)
        debits = Counter(e.run_id for e in await ledger.entries(o) if e.kind == "run_charge")
        assert debits == Counter(r.run_id for r in mine)  # every run debited, each exactly once
    assert await ledger.drift(owners) == []


async def test_an_uncovered_run_stays_uncollected_until_a_deposit_settles_it_once(
    billing_replicas, events, ledger, uow, nc, new_owner, fund
) -> None:
    o = new_owner()
    await fund(o, 3)
    from_seq = await events.next_outcome_seq()
    run = events.completed(o, price=5)
    await events.publish([run])
    charge = (await ledger.wait_for_charges([run.run_id]))[run.run_id]
    assert charge.status == "uncollected"
    balance = await rpc.call(nc, subjects.WALLET_BALANCE, GetBalance(owner_id=o), Balance)
    assert (balance.balance_cents, balance.lifetime_spent_cents, balance.uncollected_cents) == (3, 0, 5)
    assert [e.kind for e in await ledger.entries(o)] == ["deposit"]  # the wallet was not touched

    deposit = Deposit(owner_id=o, amount_cents=500, idempotency_key=uuid.uuid4().hex)
    deposited = await rpc.call(nc, subjects.WALLET_DEPOSIT, deposit, Deposited, timeout=10)
    assert deposited.balance_cents == 498
    charges = await rpc.call(nc, subjects.WALLET_CHARGES, GetCharges(run_ids=[run.run_id]), Charges)
    assert charges.charges[run.run_id].status == "collected"

    await events.publish([events.replay(run)], fresh_msg_id=True)  # the run announced again, later
    await rpc.call(nc, subjects.WALLET_DEPOSIT, deposit.model_copy(update={"idempotency_key": "2"}), Deposited)
    await events.quiescent(MAIN)
    assert [e.kind for e in await ledger.entries(o)] == ["deposit", "deposit", "settlement", "deposit"]
    balance = await rpc.call(nc, subjects.WALLET_BALANCE, GetBalance(owner_id=o), Balance)
    assert (balance.balance_cents, balance.lifetime_spent_cents, balance.uncollected_cents) == (998, 5, 0)

    outcomes = await events.outcomes({charge.id}, from_seq)
    assert [e["type"] for e in outcomes[charge.id]][:2] == ["billing.charge.uncollected", "billing.charge.collected"]
    assert {e["amount_cents"] for e in outcomes[charge.id]} == {5}
    assert await ledger.drift([o]) == []


async def test_a_charge_committed_but_never_announced_is_announced_when_its_run_comes_again(
    billing_replicas, events, ledger, uow, new_owner, fund
) -> None:
    """What a crash between the commit and the publish leaves behind, and how redelivery repairs it."""
    o = new_owner()
    await fund(o, 100)
    run = events.completed(o, price=7)
    async with uow() as repo:  # charged and committed, then the process "died" before publishing
        await service.charge_runs(repo, [ChargeRun(run.id, run.run_id, run.endpoint_id, o, 7, Decimal(0))])
    from_seq = await events.next_outcome_seq()
    await events.publish([run])
    await events.quiescent(MAIN)
    charge = (await ledger.charges([run.run_id]))[run.run_id]
    outcomes = await events.outcomes({charge.id}, from_seq)
    assert [e["type"] for e in outcomes[charge.id]] == ["billing.charge.collected"]
    assert (await ledger.wallet(o)).balance_cents == 93  # announced again, not charged again


async def test_free_runs_test_runs_failed_runs_and_unreadable_events_are_never_charged(
    billing_replicas, events, ledger, uow, new_owner, fund
) -> None:
    o = new_owner()
    await fund(o, 100)
    free = events.completed(o, price=0)
    test_run = events.completed(o, price=5, is_test=True)
    failed = RunFailed(run_id=f"run_{uuid.uuid4().hex}", endpoint_id="aep_1", owner_id=o, price_per_run_cents=5,
                       error=RunError(code="timeout", message="took too long"))  # fmt: skip
    await events.publish([free, test_run, failed])
    await events.publish_raw(subjects.RUN_COMPLETED, b'{"type": "run.completed", "not": "an event"}')
    await events.publish_raw(subjects.RUN_COMPLETED, b"\xff not json")
    paid = events.completed(o, price=5)
    await events.publish([paid])
    await ledger.wait_for_charges([paid.run_id])
    await events.quiescent(MAIN)
    assert set(await ledger.charges([free.run_id, test_run.run_id, failed.run_id, paid.run_id])) == {paid.run_id}
    assert (await ledger.wallet(o)).balance_cents == 95
