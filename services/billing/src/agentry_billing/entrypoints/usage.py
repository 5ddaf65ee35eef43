"""NATS request handlers of usage analytics and low-balance alerts, in the `billing` queue group."""

from __future__ import annotations

from faststream.nats import NatsRouter

from agentry_common import subjects
from agentry_common.rpc import serve
from agentry_common.usage_requests import BalanceAlerts, GetBalanceAlerts, GetUsage, SetBalanceAlerts, UsageReport

from .. import usage
from ..settings import settings
from .broker import QUEUE
from .container import BillingDep

router = NatsRouter()


@router.subscriber(subjects.WALLET_USAGE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def get_usage(cmd: GetUsage, billing: BillingDep) -> UsageReport:
    async with billing.usage_unit_of_work() as repo:
        return await usage.report(repo, cmd)


@router.subscriber(subjects.WALLET_ALERTS_GET, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def get_alerts(cmd: GetBalanceAlerts, billing: BillingDep) -> BalanceAlerts:
    async with billing.usage_unit_of_work() as repo:
        return BalanceAlerts(low_balance_cents=await repo.get_alert(cmd.owner_id))


@router.subscriber(subjects.WALLET_ALERTS_SET, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def set_alerts(cmd: SetBalanceAlerts, billing: BillingDep) -> BalanceAlerts:
    async with billing.usage_unit_of_work() as repo:
        await repo.set_alert(cmd.owner_id, cmd.low_balance_cents)
    return BalanceAlerts(low_balance_cents=cmd.low_balance_cents)
