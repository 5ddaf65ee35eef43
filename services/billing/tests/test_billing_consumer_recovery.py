"""Kill -9 of billing in the middle of a stream: after a restart every priced run has exactly one charge,
balances equal the ledger and every outcome is announced. The killed replica is the only consumer of its own
durable, so the restart has to pick up exactly where the kill left off."""

from __future__ import annotations

import random
from collections import Counter

import pytest


@pytest.mark.parametrize("total", [300, pytest.param(2000, marks=pytest.mark.slow)])
async def test_kill_9_in_the_middle_of_a_stream_loses_no_charge_and_makes_none_twice(
    total: int, start_billing, private_consumer, events, ledger, uow, eventually, new_owner, fund
) -> None:
    owners = [new_owner() for _ in range(20)]
    funds = {o: random.randint(50, 80 * total // 20) for o in owners}  # some owners run dry: both outcomes
    for o, amount in funds.items():
        await fund(o, amount)
    runs = [events.completed(random.choice(owners), random.randint(1, 9)) for _ in range(total)]
    first, second = runs[: total // 2], runs[total // 2 :]
    from_seq = await events.next_outcome_seq()
    replica = start_billing(CHARGE_CONSUMER=private_consumer, CHARGE_BATCH_SIZE="25")

    await events.publish(first)

    async def charging() -> bool:
        return len(await ledger.charges(r.run_id for r in first)) >= len(first) // 4

    assert await eventually(charging, 60, 0.02)
    replica.stop(kill=True)  # SIGKILL: no shutdown, whatever batch was in flight is cut off
    charged_at_kill = len(await ledger.charges(r.run_id for r in runs))
    await events.publish(second)  # the stream goes on while billing is down
    await events.publish([events.replay(r) for r in random.sample(first, 30)], fresh_msg_id=True)
    replica.restart()

    charges = await ledger.wait_for_charges([r.run_id for r in runs], timeout=180)
    await events.quiescent(private_consumer, timeout=180)
    assert charged_at_kill < total
    assert len(charges) == total  # every priced run has a charge (and run_id is unique: never two)
    for o in owners:
        mine = [c for c in charges.values() if c.owner_id == o]
        collected = sum(c.amount_cents for c in mine if c.status == "collected")
        uncollected = sum(c.amount_cents for c in mine if c.status == "uncollected")
        wallet = await ledger.wallet(o)
        assert (wallet.balance_cents, wallet.uncollected_cents) == (funds[o] - collected, uncollected)
        debits = Counter(e.charge_id for e in await ledger.entries(o) if e.kind == "run_charge")
        assert debits == Counter(c.id for c in mine if c.status == "collected")
    assert await ledger.drift(owners) == []
    outcomes = await events.outcomes({c.id for c in charges.values()}, from_seq)
    for c in charges.values():  # every outcome was announced, and says what the ledger says
        announced = {e["status"] for e in outcomes.get(c.id, [])}
        assert announced == {c.status}, (c.run_id, announced, c.status)
