"""Payments use cases (money in through Stripe): deposits, the webhook's events, refunds and disputes, and
auto-recharge. Each function runs inside the caller's unit of work; Stripe API calls happen between units of
work, in `entrypoints/payments.py`, never while a wallet is locked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agentry_common.errors import Conflict, ValidationFailed
from agentry_common.events import DepositSucceeded
from agentry_common.payment_requests import (
    AutoRecharge,
    DepositRecord,
    DepositStarted,
    SetAutoRecharge,
)
from agentry_common.requests import Deposit

from .domain import ChargeOutcome
from .payments_repository import DepositRow, PaymentsRepository
from .repository import BillingRepository, NewEntry
from .service import MAX_KEY_CHARS, credit_wallet, new_id

log = logging.getLogger(__name__)

STRIPE_ACTOR = "stripe"  # credits Stripe confirmed: their idempotency scope, apart from any owner's keys
MIN_DEPOSIT_CENTS, MAX_DEPOSIT_CENTS = 500, 50_000
MAX_THRESHOLD_CENTS = 10_000_000
HANDLED = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
)


def record(row: DepositRow) -> DepositRecord:
    return DepositRecord(
        id=row.id,
        status=row.status,
        amount_cents=row.amount_cents,
        currency=row.currency,
        source=row.source,
        checkout_url=row.checkout_url if row.status == "pending" else None,
        created_at=row.created_at,
        completed_at=row.completed_at,
    )


async def open_deposit(prepo: PaymentsRepository, cmd: Deposit, currency: str) -> DepositRow:
    """The pending deposit of this Idempotency-Key (created now, or by an earlier try with the same body)."""
    if not MIN_DEPOSIT_CENTS <= cmd.amount_cents <= MAX_DEPOSIT_CENTS:
        raise ValidationFailed(f"amount_cents: must be between {MIN_DEPOSIT_CENTS} and {MAX_DEPOSIT_CENTS}")
    if not cmd.idempotency_key or len(cmd.idempotency_key) > MAX_KEY_CHARS:
        raise ValidationFailed(f"idempotency_key: required, at most {MAX_KEY_CHARS} characters")
    row = await prepo.insert_deposit(
        id=new_id("dep"), owner_id=cmd.owner_id, source="checkout", amount_cents=cmd.amount_cents,
        currency=currency, idempotency_key=cmd.idempotency_key,
    )  # fmt: skip
    if row.amount_cents != cmd.amount_cents or row.source != "checkout":
        raise ValidationFailed(
            "this Idempotency-Key was already used for a different request", code="idempotency_key_reused"
        )
    return row


def started(row: DepositRow) -> DepositStarted:
    return DepositStarted(deposit=record(row))


# --- the webhook's events ---


@dataclass
class Handled:
    """What an event did: charges its credit settled (to announce after commit)."""

    duplicate: bool = False
    settled: list[ChargeOutcome] = field(default_factory=list)
    deposits: list[DepositSucceeded] = field(default_factory=list)  # credited by this event (usage alerts)


async def handle_event(repo: BillingRepository, event_id: str, event_type: str, obj: dict[str, Any]) -> Handled:
    """Apply one verified Stripe event, once: its id is claimed in this transaction, with its effects."""
    prepo = PaymentsRepository(repo.session)
    if not await prepo.record_event(event_id, event_type):
        return Handled(duplicate=True, settled=await _already_settled(repo, prepo, event_type, obj))
    if event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return await _checkout_paid(repo, prepo, obj)
    if event_type in ("checkout.session.expired", "checkout.session.async_payment_failed"):
        status = "expired" if event_type.endswith("expired") else "failed"
        deposit = await prepo.lock_deposit(deposit_id=_deposit_id(obj))
        if deposit is not None:
            await prepo.finish_deposit(deposit.id, status)
    elif event_type == "payment_intent.succeeded":
        return await _payment_intent_succeeded(repo, prepo, obj)
    elif event_type == "payment_intent.payment_failed":
        deposit = await prepo.lock_deposit(_meta(obj, "deposit_id"), obj.get("id"))
        if deposit is not None and deposit.source == "auto_recharge":
            await prepo.finish_deposit(deposit.id, "failed")
    elif event_type == "charge.refunded":
        await _refunded(repo, prepo, obj)
    elif event_type == "charge.dispute.created":
        await _disputed(repo, prepo, obj)
    return Handled()


def _meta(obj: dict[str, Any], key: str) -> str | None:
    value = (obj.get("metadata") or {}).get(key)
    return str(value) if value else None


def _deposit_id(obj: dict[str, Any]) -> str | None:
    return _meta(obj, "deposit_id") or obj.get("client_reference_id")


async def _credit(repo: BillingRepository, prepo: PaymentsRepository, deposit: DepositRow) -> list[ChargeOutcome]:
    """Credit a locked deposit's wallet, once: the credit's key is the deposit's id."""
    cmd = Deposit(owner_id=deposit.owner_id, amount_cents=deposit.amount_cents, idempotency_key=deposit.id,
                  actor_id=STRIPE_ACTOR)  # fmt: skip
    credited = await credit_wallet(repo, cmd)
    credit = await repo.find_credit(STRIPE_ACTOR, deposit.id)
    assert credit is not None
    await prepo.finish_deposit(deposit.id, "succeeded", credit.id)
    return credited.settled


def _succeeded(deposit: DepositRow) -> DepositSucceeded:
    return DepositSucceeded(owner_id=deposit.owner_id, deposit_id=deposit.id, amount_cents=deposit.amount_cents)


async def _checkout_paid(repo: BillingRepository, prepo: PaymentsRepository, obj: dict[str, Any]) -> Handled:
    if obj.get("payment_status") != "paid":
        return Handled()  # a delayed payment method: `async_payment_succeeded` follows
    deposit = await prepo.lock_deposit(deposit_id=_deposit_id(obj))
    if deposit is None:
        log.warning("a paid Checkout Session names no deposit of ours", extra={"session": obj.get("id")})
        return Handled()
    if obj.get("payment_intent"):
        await prepo.set_payment_intent(deposit.id, str(obj["payment_intent"]))
    if obj.get("amount_total") not in (None, deposit.amount_cents):
        log.warning("a Checkout Session was paid another amount than asked", extra={"deposit_id": deposit.id})
    if deposit.status == "succeeded":
        return Handled()
    return Handled(settled=await _credit(repo, prepo, deposit), deposits=[_succeeded(deposit)])


async def _payment_intent_succeeded(repo: BillingRepository, prepo: PaymentsRepository, obj: dict[str, Any]) -> Handled:
    deposit = await prepo.lock_deposit(_meta(obj, "deposit_id"), obj.get("id"))
    if deposit is None:
        return Handled()
    customer, method = obj.get("customer"), obj.get("payment_method")
    if customer and method:  # the card Checkout saved (setup_future_usage), for auto-recharge
        await prepo.save_payment_method(deposit.owner_id, str(customer), str(method))
    if deposit.payment_intent_id is None:
        await prepo.set_payment_intent(deposit.id, str(obj["id"]))
    if deposit.source != "auto_recharge" or deposit.status == "succeeded":
        return Handled()  # a Checkout payment is credited by `checkout.session.completed`
    return Handled(settled=await _credit(repo, prepo, deposit), deposits=[_succeeded(deposit)])


async def _already_settled(repo: BillingRepository, prepo: PaymentsRepository, event_type: str,
                           obj: dict[str, Any]) -> list[ChargeOutcome]:  # fmt: skip
    """A redelivered credit event announces the charges its credit settled again (their events are idempotent),
    in case the first delivery committed but could not announce them."""
    if event_type not in ("checkout.session.completed", "checkout.session.async_payment_succeeded",
                          "payment_intent.succeeded"):  # fmt: skip
        return []
    deposit_id = _deposit_id(obj) if event_type.startswith("checkout") else _meta(obj, "deposit_id")
    credit = await repo.find_credit(STRIPE_ACTOR, deposit_id) if deposit_id else None
    return await repo.settled_by(credit.id) if credit else []


async def _refunded(repo: BillingRepository, prepo: PaymentsRepository, obj: dict[str, Any]) -> None:
    # `amount_refunded` is cumulative: a refund event takes back what it adds to the refunds recorded so far,
    # so partial refunds, redeliveries and out-of-order deliveries take back each cent once.
    deposit = await prepo.lock_deposit(payment_intent_id=obj.get("payment_intent"))
    if deposit is None or deposit.status != "succeeded":
        return
    refunded = int(obj.get("amount_refunded") or 0)
    amount = refunded - await prepo.reversed_cents(deposit.id, "refund")
    amount = min(amount, deposit.amount_cents - await prepo.reversed_cents(deposit.id))
    if amount > 0:
        await _reverse(repo, prepo, deposit, "refund", f"{obj.get('id')}:{refunded}", amount)


async def _disputed(repo: BillingRepository, prepo: PaymentsRepository, obj: dict[str, Any]) -> None:
    deposit = await prepo.lock_deposit(payment_intent_id=obj.get("payment_intent"))
    if deposit is None or deposit.status != "succeeded":
        return
    amount = min(int(obj.get("amount") or 0), deposit.amount_cents - await prepo.reversed_cents(deposit.id))
    if amount > 0:
        await _reverse(repo, prepo, deposit, "dispute", str(obj.get("id")), amount)


async def _reverse(repo: BillingRepository, prepo: PaymentsRepository, deposit: DepositRow, kind: str,
                   ref: str, amount: int) -> None:  # fmt: skip
    """Take `amount` back from the wallet: what the balance covers now, the rest from the next credits."""
    book = (await repo.lock_wallets([deposit.owner_id]))[deposit.owner_id]
    taken = min(amount, book.balance_cents)
    reversal_id = new_id("rev")
    if not await prepo.insert_reversal(id=reversal_id, owner_id=deposit.owner_id, deposit_id=deposit.id, kind=kind,
                                       stripe_ref=ref, amount_cents=amount, owed_cents=amount - taken):  # fmt: skip
        return
    if taken > 0:
        entry = NewEntry(new_id("txn"), deposit.owner_id, kind, book.debit(taken), reversal_id=reversal_id)
        await repo.write_back([book])
        await repo.insert_entries([entry])


# --- auto-recharge ---


async def get_auto_recharge(prepo: PaymentsRepository, owner_id: str) -> AutoRecharge:
    row = await prepo.auto_recharge(owner_id)
    customer = await prepo.customer(owner_id)
    has_card = bool(customer and customer.payment_method_id)
    if row is None:
        return AutoRecharge(enabled=False, threshold_cents=0, amount_cents=0, has_payment_method=has_card)
    return AutoRecharge(enabled=row.enabled, threshold_cents=row.threshold_cents, amount_cents=row.amount_cents,
                        has_payment_method=has_card)  # fmt: skip


async def set_auto_recharge(repo: BillingRepository, cmd: SetAutoRecharge) -> AutoRecharge:
    if not 0 <= cmd.threshold_cents <= MAX_THRESHOLD_CENTS:
        raise ValidationFailed(f"threshold_cents: must be between 0 and {MAX_THRESHOLD_CENTS}")
    if not MIN_DEPOSIT_CENTS <= cmd.amount_cents <= MAX_DEPOSIT_CENTS:
        raise ValidationFailed(f"amount_cents: must be between {MIN_DEPOSIT_CENTS} and {MAX_DEPOSIT_CENTS}")
    # Under the wallet's lock, so no charge crosses the threshold between reading the balance and arming.
    book = (await repo.lock_wallets([cmd.owner_id]))[cmd.owner_id]
    prepo = PaymentsRepository(repo.session)
    armed = cmd.enabled and book.balance_cents >= cmd.threshold_cents
    await prepo.set_auto_recharge(cmd.owner_id, cmd.enabled, cmd.threshold_cents, cmd.amount_cents, armed)
    return await get_auto_recharge(prepo, cmd.owner_id)


def refuse_without_stripe() -> None:
    raise Conflict("payments are not set up on this deployment (PAYMENT_MODE=manual)", code="payments_not_configured")
