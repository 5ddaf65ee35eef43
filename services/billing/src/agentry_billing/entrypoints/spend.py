"""Spend caps over NATS: reservation requests from gateways, and the consumer that releases failed runs' holds.

A completed run's hold is settled by the charge consumer, in the transaction that charges it (it reads every
`run.completed` anyway). Failed runs are read here, through a durable of their own (`run.failed` only, a small
share of runs): a batch costs one indexed read, and only holds are written. A sweeper releases holds whose run
never came (the gateway crashed between holding and publishing) once they are older than any run can be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Literal

import orjson
from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsBroker
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

from agentry_common import asyncapi, subjects
from agentry_common.events import BudgetReached, RunFailed
from agentry_common.requests import Done, GetSpent, ReleaseSpend, ReserveSpend, SpendReserved, Spent
from agentry_common.rpc import serve

from .. import spend
from ..settings import settings
from ..spend_repository import SpendRepository
from .broker import QUEUE, publisher, sessions

log = logging.getLogger(__name__)
router = NatsRouter()
STREAM = subjects.RUN_EVENTS_STREAM.name
asyncapi.consumes(
    subjects.RUN_FAILED, RunFailed, by="billing", stream=subjects.RUN_EVENTS_STREAM, durable="billing-spend",
    description="Billing releases a failed run's spend-cap hold (a completed run's hold is settled as it is "
    "charged).",
)  # fmt: skip


asyncapi.publishes(
    subjects.BUDGET_REACHED, BudgetReached, by="billing", stream=subjects.BILLING_EVENTS_STREAM,
    description="An endpoint's budget is used up for its period (a run was refused for it, or took it exactly to "
    "the budget); once per endpoint, period and budget amount.",
)  # fmt: skip


@router.subscriber(subjects.SPEND_RESERVE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def reserve(cmd: ReserveSpend, broker: NatsBroker) -> SpendReserved:
    try:
        async with sessions() as session, session.begin():
            reserved, reached = await spend.reserve(SpendRepository(session), cmd)
    except spend.Refused as refused:  # rolled back: none of the run's holds stays
        if refused.reached is not None:
            await _announce(broker, refused.reached)
        raise refused.error from None
    for budget in reached:
        await _announce(broker, budget)
    return reserved


async def _announce(broker: NatsBroker, reached: spend.Reached) -> None:
    """Publish `billing.budget.reached` once for the period: marked and published in one transaction, so a failed
    publish leaves it unmarked for the next refusal to try again (the Nats-Msg-Id de-duplicates a double)."""
    try:
        async with sessions() as session, session.begin():
            event = await spend.announce(SpendRepository(session), reached)
            if event is not None:
                await publisher.start(broker.connection)
                await publisher.publish([(subjects.BUDGET_REACHED, event.model_dump_json().encode(), event.msg_id())])
    except Exception as err:  # the refusal stands; the next one announces it
        log.warning("could not announce a reached budget: %s", type(err).__name__)


@router.subscriber(subjects.SPEND_RELEASE, queue=QUEUE)
@serve
async def release(cmd: ReleaseSpend) -> Done:
    async with sessions() as session, session.begin():
        await spend.end_holds(SpendRepository(session), [cmd.run_id], "released")
    return Done()


@router.subscriber(subjects.SPEND_TOTALS, queue=QUEUE)
@serve
async def totals(cmd: GetSpent) -> Spent:
    async with sessions() as session:
        return await spend.spent(SpendRepository(session), cmd)


async def end_hold(run_id: str, scope: str, to: Literal["settled", "released"]) -> None:
    async with sessions() as session, session.begin():
        await SpendRepository(session).end(run_id, scope, to)


class HoldEnder:
    """Settles or releases holds as runs end; sweeps holds left behind."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, nc: Client) -> None:
        js = nc.jetstream()
        config = ConsumerConfig(
            durable_name=settings.spend_consumer,
            description="billing: releases the spend-cap holds of failed runs",
            filter_subject=subjects.RUN_FAILED,
            deliver_policy=DeliverPolicy.NEW,  # holds exist only from this feature on; older outcomes have none
            ack_policy=AckPolicy.ALL,  # one ack for a whole batch: ending a hold twice changes nothing
            ack_wait=30,
            max_deliver=-1,
        )
        with contextlib.suppress(APIError):  # exists already (another replica, or an earlier start)
            await js.add_consumer(STREAM, config)
        sub = await js.pull_subscribe_bind(durable=settings.spend_consumer, stream=STREAM)
        self._tasks = [asyncio.create_task(self._consume(sub)), asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _consume(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1)
            except NatsTimeout:
                continue
            except Exception as err:
                log.warning("cannot fetch run outcomes for spend holds: %s", type(err).__name__)
                await asyncio.sleep(1)
                continue
            try:
                await self._handle([(msg.subject, msg.data) for msg in msgs])
            except Exception:
                log.exception("ending spend holds failed; the batch comes back after the ack wait")
                await asyncio.sleep(1)
                continue
            with contextlib.suppress(Exception):
                await msgs[-1].ack()  # AckPolicy.ALL: the whole batch

    async def _handle(self, batch: list[tuple[str, bytes]]) -> None:
        run_ids = []
        for _subject, data in batch:
            event = orjson.loads(data)
            if not event.get("is_test") and event.get("price_per_run_cents"):  # only a priced live run holds
                run_ids.append(str(event["run_id"]))
        async with sessions() as session, session.begin():
            await spend.end_holds(SpendRepository(session), run_ids, "released")

    async def _sweep(self) -> None:
        interval = min(60.0, settings.spend_hold_max_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                before = spend.stale_before(datetime.now(UTC), settings.spend_hold_max_s)
                async with sessions() as session:
                    stale = await SpendRepository(session).stale_holds(before, 500)
                for run_id, scope in stale:
                    await end_hold(run_id, scope, "released")
                if stale:
                    log.warning("released %d spend holds whose runs never ended", len(stale))
            except Exception as err:
                log.warning("sweeping spend holds failed: %s", type(err).__name__)


holds = HoldEnder()
