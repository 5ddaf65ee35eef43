"""The default `manual` payment mode keeps crediting at once, lists those deposits, and says plainly that Stripe
features are not set up (instead of starting payments nobody can confirm)."""

from __future__ import annotations

import uuid

import pytest

from agentry_common import rpc, subjects
from agentry_common.errors import Conflict
from agentry_common.payment_requests import (
    DepositList,
    DepositReply,
    ListDeposits,
    SetAutoRecharge,
    StripeWebhook,
    WebhookReceived,
)
from agentry_common.requests import Deposit, Deposited


async def test_manual_deposits_credit_at_once_and_are_listed_as_succeeded(billing_replicas, nc, new_owner) -> None:
    owner = new_owner()
    cmd = Deposit(owner_id=owner, amount_cents=1200, idempotency_key=uuid.uuid4().hex)
    reply = (await rpc.call(nc, subjects.WALLET_DEPOSIT, cmd, DepositReply, timeout=30)).root
    assert isinstance(reply, Deposited) and reply.balance_cents == 1200
    listed = await rpc.call(nc, subjects.WALLET_DEPOSITS, ListDeposits(owner_id=owner), DepositList, timeout=30)
    [deposit] = listed.deposits
    assert (deposit.status, deposit.amount_cents, deposit.source, deposit.checkout_url) == (
        "succeeded", 1200, "manual", None,
    )  # fmt: skip


async def test_without_stripe_auto_recharge_and_webhooks_are_refused(billing_replicas, nc, new_owner) -> None:
    setting = SetAutoRecharge(owner_id=new_owner(), enabled=True, threshold_cents=100, amount_cents=1000)
    with pytest.raises(Conflict) as refused:
        await rpc.call(nc, subjects.WALLET_AUTO_RECHARGE_SET, setting, DepositList, timeout=30)
    assert refused.value.code == "payments_not_configured"
    with pytest.raises(Conflict):
        await rpc.call(nc, subjects.PAYMENTS_STRIPE_WEBHOOK, StripeWebhook(payload="{}", signature="t=1,v1=x"),
                       WebhookReceived, timeout=30)  # fmt: skip
