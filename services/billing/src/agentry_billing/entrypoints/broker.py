"""NATS request handlers of the billing service, in the `billing` queue group (any replica answers)."""

from __future__ import annotations

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsBroker

from agentry_common import asyncapi, subjects
from agentry_common.batch_publish import PublishFailed
from agentry_common.errors import ServiceUnavailable
from agentry_common.events import DepositSucceeded
from agentry_common.payment_requests import DepositStarted
from agentry_common.requests import (
    Balance,
    Charges,
    Deposit,
    Deposited,
    GetBalance,
    GetCharges,
    ListTransactions,
    TransactionPage,
)
from agentry_common.rpc import serve

from .. import metrics, service
from ..settings import settings
from .consumer import publish_outcomes
from .container import BillingDep

QUEUE = "billing"
router = NatsRouter()


@router.subscriber(subjects.WALLET_BALANCE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def get_balance(cmd: GetBalance, billing: BillingDep) -> Balance:
    async with billing.unit_of_work() as repo:
        return await service.balance(repo, cmd.owner_id)


asyncapi.publishes(
    subjects.DEPOSIT_SUCCEEDED, DepositSucceeded, by="billing", stream=subjects.BILLING_EVENTS_STREAM,
    description="A deposit was credited to its owner's wallet (manual mode at once; Stripe when paid). "
    "`Nats-Msg-Id` is the deposit's id, so a retried deposit is announced once.",
)  # fmt: skip


def _deposit_event(cmd: Deposit, credited: service.Credited) -> list[DepositSucceeded]:
    """A manual-mode deposit (admin credits are not deposits), by the id `GET /api/balance/deposits` lists it
    under (its credit's), so a retry with the same Idempotency-Key announces the same deposit."""
    if cmd.kind != "deposit" or credited.credit_id is None:
        return []
    txn = credited.deposited.transaction
    return [DepositSucceeded(owner_id=cmd.owner_id, deposit_id=credited.credit_id, amount_cents=txn.amount_cents,
                             occurred_at=txn.created_at)]  # fmt: skip


@router.subscriber(subjects.WALLET_DEPOSIT, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def deposit(cmd: Deposit, broker: NatsBroker, billing: BillingDep) -> Deposited | DepositStarted:
    if settings.payment_mode == "stripe" and cmd.kind == "deposit":
        from .payments import checkout_deposit  # imported here: payments' handlers build on this module

        return await checkout_deposit(billing, cmd)  # credited later, by Stripe's webhook
    async with billing.unit_of_work() as repo:
        credited = await service.credit_wallet(repo, cmd)
    if credited.deposited.replayed:
        metrics.CREDIT_REPLAYS.inc()
    else:
        metrics.CREDITS.labels(cmd.kind).inc()
        metrics.CREDITED_CENTS.labels(cmd.kind).inc(cmd.amount_cents)
        metrics.SETTLED.inc(len(credited.settled))
        metrics.SETTLED_CENTS.inc(sum(o.amount_cents for o in credited.settled))
    # After commit. Should this fail, the caller's retry with the same key replays and publishes again.
    try:
        await billing.publisher.start(broker.connection)  # requests may arrive before the startup hook ran
        await publish_outcomes(billing.publisher, credited.settled, extra=_deposit_event(cmd, credited))
    except PublishFailed as err:
        raise ServiceUnavailable(
            "the credit is recorded but the settled charges could not be announced; retry with the same "
            "Idempotency-Key to confirm it",
            code="retry_with_same_idempotency_key",
        ) from err
    return credited.deposited


@router.subscriber(subjects.WALLET_TRANSACTIONS, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def list_transactions(cmd: ListTransactions, billing: BillingDep) -> TransactionPage:
    async with billing.unit_of_work() as repo:
        return await service.transactions(repo, cmd.owner_id, cmd.limit, cmd.cursor)


@router.subscriber(subjects.WALLET_CHARGES, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def get_charges(cmd: GetCharges, billing: BillingDep) -> Charges:
    async with billing.unit_of_work() as repo:
        return await service.charges(repo, cmd.run_ids)
