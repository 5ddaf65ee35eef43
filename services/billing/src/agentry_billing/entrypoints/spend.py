"""Spend caps over NATS: reservation requests from gateways, and the sweeper of holds left behind.

A run's hold ends in the charge consumer, in the transaction that charges (settled) or counts (released, for a
failed run) it: that consumer reads every `run.completed` and `run.failed` anyway. The sweeper releases holds
whose run never came (the gateway crashed between holding and publishing) once they are older than any run can be.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsBroker
from nats.aio.client import Client

from agentry_common import asyncapi, subjects
from agentry_common.events import BudgetReached
from agentry_common.requests import Done, GetSpent, ReleaseSpend, ReserveSpend, SpendReserved, Spent
from agentry_common.rpc import serve

from .. import spend
from ..settings import settings
from ..spend_repository import SpendRepository
from .broker import QUEUE
from .container import Billing, BillingDep

log = logging.getLogger(__name__)
router = NatsRouter()


asyncapi.publishes(
    subjects.BUDGET_REACHED, BudgetReached, by="billing", stream=subjects.BILLING_EVENTS_STREAM,
    description="An endpoint's budget is used up for its period (a run was refused for it, or took it exactly to "
    "the budget); once per endpoint, period and budget amount.",
)  # fmt: skip


@router.subscriber(subjects.SPEND_RESERVE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def reserve(cmd: ReserveSpend, broker: NatsBroker, billing: BillingDep) -> SpendReserved:
    try:
        async with billing.spend_unit_of_work() as repo:
            reserved, reached = await spend.reserve(repo, cmd)
    except spend.Refused as refused:  # rolled back: none of the run's holds stays
        if refused.reached is not None:
            await _announce(billing, broker, refused.reached)
        raise refused.error from None
    for budget in reached:
        await _announce(billing, broker, budget)
    return reserved


async def _announce(billing: Billing, broker: NatsBroker, reached: spend.Reached) -> None:
    """Publish `billing.budget.reached` once for the period: marked and published in one transaction, so a failed
    publish leaves it unmarked for the next refusal to try again (the Nats-Msg-Id de-duplicates a double)."""
    try:
        async with billing.spend_unit_of_work() as repo:
            event = await spend.announce(repo, reached)
            if event is not None:
                await billing.publisher.start(broker.connection)
                await billing.publisher.publish(
                    [(subjects.BUDGET_REACHED, event.model_dump_json().encode(), event.msg_id())]
                )
    except Exception as err:  # the refusal stands; the next one announces it
        log.warning("could not announce a reached budget: %s", type(err).__name__)


@router.subscriber(subjects.SPEND_RELEASE, queue=QUEUE)
@serve
async def release(cmd: ReleaseSpend, billing: BillingDep) -> Done:
    async with billing.spend_unit_of_work() as repo:
        await spend.end_holds(repo, [cmd.run_id], "released")
    return Done()


@router.subscriber(subjects.SPEND_TOTALS, queue=QUEUE)
@serve
async def totals(cmd: GetSpent, billing: BillingDep) -> Spent:
    async with billing.sessions() as session:  # a read: no transaction to commit
        return await spend.spent(SpendRepository(session), cmd)


class HoldEnder:
    """Sweeps holds left behind."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, nc: Client) -> None:
        self._tasks = [asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sweep(self) -> None:
        interval = min(60.0, settings.spend_hold_max_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                before = spend.stale_before(datetime.now(UTC), settings.spend_hold_max_s)
                async with self.billing.sessions() as session:
                    stale = await SpendRepository(session).stale_holds(before, 500)
                for run_id, scope in stale:
                    async with self.billing.spend_unit_of_work() as repo:
                        await repo.end(run_id, scope, "released")
                if stale:
                    log.warning("released %d spend holds whose runs never ended", len(stale))
            except Exception as err:
                log.warning("sweeping spend holds failed: %s", type(err).__name__)
