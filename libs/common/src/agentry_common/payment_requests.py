"""Request/reply contracts of payments (money in), between the gateway and billing over core NATS.

Kept apart from `requests` so the wallet's basic contracts stay short; the shapes here are also the public
API's (the gateway answers them as they come).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, RootModel

from .events import Contract
from .requests import Deposited

DepositStatus = Literal["pending", "succeeded", "failed", "expired"]


class DepositRecord(Contract):
    id: str = Field(description="`dep_…`.")
    status: DepositStatus = Field(
        description="`pending` until the payment is confirmed by Stripe's webhook (`succeeded`), declined "
        "(`failed`) or abandoned (`expired`)."
    )
    amount_cents: int = Field(description="Amount asked for, in the wallet's currency.")
    currency: str = Field("USD", description="The wallet's currency (ISO 4217).")
    source: Literal["manual", "checkout", "auto_recharge"] = Field(
        description="`manual`: credited at once (manual payment mode); `checkout`: a Stripe Checkout payment; "
        "`auto_recharge`: an off-session payment on the saved card."
    )
    checkout_url: str | None = Field(None, description="Where the owner pays (Stripe Checkout), while pending.")
    created_at: datetime
    completed_at: datetime | None = Field(None, description="When the wallet was credited.")


class DepositStarted(Contract):
    """Stripe payment mode: the deposit waits for its payment; the wallet is credited by the webhook."""

    deposit: DepositRecord


class DepositReply(RootModel[Deposited | DepositStarted]):
    """`wallet.deposit` answers `Deposited` (credited at once) or `DepositStarted` (stripe payment mode)."""


class ListDeposits(Contract):
    owner_id: str
    limit: int = 20


class DepositList(Contract):
    deposits: list[DepositRecord] = Field(description="Newest first.")


class StripeWebhook(Contract):
    payload: str = Field(description="The request body exactly as Stripe sent it (UTF-8 JSON), for the signature.")
    signature: str = Field(description="The `Stripe-Signature` header.")


class WebhookReceived(Contract):
    received: bool = True


class AutoRechargeSettings(Contract):
    enabled: bool = Field(description="Charge the saved card when a run charge takes the balance below the threshold.")
    threshold_cents: int = Field(description="Recharge once the balance falls below this.")
    amount_cents: int = Field(description="How much each recharge adds.")


class AutoRecharge(AutoRechargeSettings):
    has_payment_method: bool = Field(
        description="Whether a card is saved (by a first Stripe Checkout deposit); without one nothing is charged."
    )


class GetAutoRecharge(Contract):
    owner_id: str


class SetAutoRecharge(AutoRechargeSettings):
    owner_id: str
