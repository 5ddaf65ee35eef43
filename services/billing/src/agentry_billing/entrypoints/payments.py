"""NATS request handlers of payments (queue group `billing`): Stripe deposits, the Stripe webhook, deposit
listing and auto-recharge; and the off-session payments auto-recharge starts after a charge batch commits.

Stripe is called between transactions, never with a wallet locked: a deposit row is committed first, the
Checkout Session is created (idempotently, keyed by the deposit) and then recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsBroker

from agentry_common import subjects
from agentry_common.errors import AgentryError, BadRequest, ServiceUnavailable
from agentry_common.payment_requests import (
    AutoRecharge,
    DepositList,
    DepositStarted,
    GetAutoRecharge,
    ListDeposits,
    SetAutoRecharge,
    StripeWebhook,
    WebhookReceived,
)
from agentry_common.requests import Deposit
from agentry_common.rpc import serve

from .. import payments
from ..payments_repository import PaymentsRepository, Recharge
from ..settings import settings
from ..stripe_api import CardDeclined, PaymentProviderError, StripeApi
from .broker import QUEUE
from .consumer import publish_outcomes
from .container import Billing, BillingDep

log = logging.getLogger(__name__)
router = NatsRouter()
MAX_LIST = 100
RECHARGE_RETRY_AFTER_S = 60.0


class PaymentProviderFailed(AgentryError):
    status_code = 502
    code = "payment_provider_error"


def _stripe(billing: Billing) -> StripeApi:
    if billing.stripe is None:
        payments.refuse_without_stripe()
    assert billing.stripe is not None
    return billing.stripe


async def checkout_deposit(billing: Billing, cmd: Deposit) -> DepositStarted:
    """Stripe payment mode: a pending deposit and its Checkout Session (the same for a retried key)."""
    api = _stripe(billing)
    async with billing.unit_of_work() as repo:
        wallet = await repo.get_wallet(cmd.owner_id)
        deposit = await payments.open_deposit(
            PaymentsRepository(repo.session), cmd, wallet.currency if wallet is not None else "USD"
        )
        customer = await PaymentsRepository(repo.session).customer(cmd.owner_id)
    if deposit.checkout_url is not None or deposit.status != "pending":
        return payments.started(deposit)
    try:
        customer_id = customer.customer_id if customer else await api.customer(cmd.owner_id)
        checkout = await api.checkout(deposit_id=deposit.id, owner_id=cmd.owner_id, customer_id=customer_id,
                                      amount_cents=deposit.amount_cents, currency=deposit.currency)  # fmt: skip
    except PaymentProviderError as err:
        raise PaymentProviderFailed(
            f"Stripe could not start the payment: {err}; retry with the same Idempotency-Key"
        ) from err
    async with billing.unit_of_work() as repo:
        prepo = PaymentsRepository(repo.session)
        if customer is None:
            await prepo.save_customer(cmd.owner_id, customer_id)
        await prepo.set_checkout(deposit.id, checkout.session_id, checkout.url)
        row = await prepo.deposit_by_key(cmd.owner_id, cmd.idempotency_key)
    assert row is not None
    return payments.started(row)


@router.subscriber(subjects.WALLET_DEPOSITS, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def list_deposits(cmd: ListDeposits, billing: BillingDep) -> DepositList:
    limit = max(1, min(cmd.limit, MAX_LIST))
    async with billing.unit_of_work() as repo:
        rows = await PaymentsRepository(repo.session).list_deposits(cmd.owner_id, limit)
    return DepositList.model_validate({"deposits": [r._asdict() for r in rows]})


@router.subscriber(subjects.PAYMENTS_STRIPE_WEBHOOK, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def stripe_webhook(cmd: StripeWebhook, broker: NatsBroker, billing: BillingDep) -> WebhookReceived:
    api = _stripe(billing)
    try:
        event = api.verify(cmd.payload, cmd.signature)
    except ValueError as err:
        message = "the Stripe-Signature does not match the body, or is too old"
        raise BadRequest(message, code="invalid_signature") from err
    if event.type not in payments.HANDLED:
        return WebhookReceived()  # acknowledged, so Stripe stops sending what this endpoint does not need
    obj = event.data.object.to_dict()
    async with billing.unit_of_work() as repo:
        handled = await payments.handle_event(repo, event.id, event.type, obj)
    if handled.duplicate:
        log.info("stripe event already processed", extra={"event_id": event.id, "type": event.type})
    try:
        await billing.publisher.start(broker.connection)
        await publish_outcomes(billing.publisher, handled.settled, extra=handled.deposits)
    except Exception as err:
        # Committed, not announced: Stripe retries a failed delivery, and a redelivery announces them again.
        raise ServiceUnavailable("the payment is recorded; its settled charges could not be announced yet") from err
    return WebhookReceived()


@router.subscriber(subjects.WALLET_AUTO_RECHARGE_GET, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def get_auto_recharge(cmd: GetAutoRecharge, billing: BillingDep) -> AutoRecharge:
    async with billing.unit_of_work() as repo:
        return await payments.get_auto_recharge(PaymentsRepository(repo.session), cmd.owner_id)


@router.subscriber(subjects.WALLET_AUTO_RECHARGE_SET, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def set_auto_recharge(cmd: SetAutoRecharge, billing: BillingDep) -> AutoRecharge:
    _stripe(billing)
    async with billing.unit_of_work() as repo:
        return await payments.set_auto_recharge(repo, cmd)


# --- auto-recharge payments ---


async def pay_recharges(billing: Billing, recharges: list[Recharge]) -> None:
    """The payments of the auto-recharges a charge batch started (`Billing.start_recharges`), one at a time."""
    for recharge in recharges:
        try:
            await pay_recharge(billing, recharge)
        except Exception:
            extra = {"deposit_id": recharge.deposit_id}
            log.exception("auto-recharge could not be started; retried later", extra=extra)


async def pay_recharge(billing: Billing, recharge: Recharge) -> None:
    """One off-session payment per crossing: the Stripe idempotency key is the crossing's."""
    api = _stripe(billing)
    async with billing.unit_of_work() as repo:
        customer = await PaymentsRepository(repo.session).customer(recharge.owner_id)
        if customer is None or not customer.payment_method_id:
            await PaymentsRepository(repo.session).finish_deposit(recharge.deposit_id, "failed")
            log.info("auto-recharge without a saved card", extra={"deposit_id": recharge.deposit_id})
            return
    try:
        payment = await api.charge_off_session(
            deposit_id=recharge.deposit_id, owner_id=recharge.owner_id, customer_id=customer.customer_id,
            payment_method_id=customer.payment_method_id, amount_cents=recharge.amount_cents,
            currency=recharge.currency,
            idempotency_key=f"agentry-auto-recharge-{recharge.owner_id}-{recharge.crossing}",
        )  # fmt: skip
    except CardDeclined:
        async with billing.unit_of_work() as repo:
            await PaymentsRepository(repo.session).finish_deposit(recharge.deposit_id, "failed")
        return
    async with billing.unit_of_work() as repo:
        await PaymentsRepository(repo.session).set_payment_intent(recharge.deposit_id, payment.payment_intent_id)


async def retry_recharges(billing: Billing, every_s: float = 30.0) -> None:
    """Start the payments of auto-recharges a stopped process left unstarted (their keys make it once)."""
    stop = billing.stopping
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        try:
            async with billing.unit_of_work() as repo:
                pending = await PaymentsRepository(repo.session).pending_recharges(RECHARGE_RETRY_AFTER_S)
            await pay_recharges(billing, pending)
        except Exception:
            log.exception("retrying auto-recharges failed")
