"""Payments API: Stripe's webhook (signed by Stripe, no JWT), deposits and auto-recharge — answered by billing,
which verifies the signature and owns the money; the gateway forwards the body untouched."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel

from agentry_common import rpc, subjects
from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import BadRequest, ErrorBody
from agentry_common.payment_requests import (
    AutoRecharge,
    DepositList,
    GetAutoRecharge,
    ListDeposits,
    SetAutoRecharge,
    StripeWebhook,
    WebhookReceived,
)

from ..schemas import AutoRechargeBody
from .deps import CurrentUser, GatewayDep

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

_NOT_CONFIGURED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "`payments_not_configured`: PAYMENT_MODE is `manual`"}
}
_WEBHOOK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "`invalid_signature`: the body is not signed by Stripe, or too long "
          "ago; `bad_request`: the body is not UTF-8. Nothing was recorded."},
    409: _NOT_CONFIGURED[409],
    413: {"model": ErrorBody, "description": "`payload_too_large`"},
    503: {"model": ErrorBody, "description": "Billing is unavailable, or the event could not be fully processed: "
          "Stripe retries, and the event takes effect once."},
}  # fmt: skip


async def _billing(gw: GatewayDep, subject: str, request: BaseModel, reply: type[Any]) -> Any:
    return await rpc.call(
        gw.nc, subject, request, reply, timeout=gw.settings.rpc_timeout_s, unavailable="billing is unavailable"
    )


@router.post(
    "/payments/stripe/webhook",
    tags=["payments"],
    responses=_WEBHOOK_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def stripe_webhook(
    request: Request,
    gw: GatewayDep,
    stripe_signature: Annotated[
        str, Header(alias="Stripe-Signature", max_length=2000, description="Stripe's signature of the raw body.")
    ] = "",
) -> WebhookReceived:
    """Stripe's webhook endpoint (configure it in Stripe's dashboard). Events: `checkout.session.completed`,
    `checkout.session.expired`, `checkout.session.async_payment_succeeded`, `checkout.session.async_payment_failed`,
    `payment_intent.succeeded`, `payment_intent.payment_failed`, `charge.refunded`, `charge.dispute.created`.
    Each takes effect once, whatever Stripe's retries."""
    body = await request.body()
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest("the body is not UTF-8 JSON") from err
    cmd = StripeWebhook(payload=payload, signature=stripe_signature)
    # Processing an event may take a few database round trips more than a wallet read: allow twice the usual.
    result: WebhookReceived = await rpc.call(
        gw.nc, subjects.PAYMENTS_STRIPE_WEBHOOK, cmd, WebhookReceived, timeout=2 * gw.settings.rpc_timeout_s,
        unavailable="billing is unavailable",
    )  # fmt: skip
    return result


@router.get("/balance/deposits", tags=["wallet"])
async def deposits(user: CurrentUser, gw: GatewayDep) -> DepositList:
    """The caller's deposits, newest first (the last 100), with their status."""
    result: DepositList = await _billing(gw, subjects.WALLET_DEPOSITS, ListDeposits(owner_id=user.id, limit=100),
                                         DepositList)  # fmt: skip
    return result


@router.get("/balance/auto-recharge", tags=["wallet"])
async def get_auto_recharge(user: CurrentUser, gw: GatewayDep) -> AutoRecharge:
    result: AutoRecharge = await _billing(
        gw, subjects.WALLET_AUTO_RECHARGE_GET, GetAutoRecharge(owner_id=user.id), AutoRecharge
    )
    return result


@router.put("/balance/auto-recharge", tags=["wallet"], responses=_NOT_CONFIGURED)
async def set_auto_recharge(body: AutoRechargeBody, user: CurrentUser, gw: GatewayDep) -> AutoRecharge:
    """When a run's charge takes the balance below `threshold_cents`, charge `amount_cents` to the card saved by
    a Stripe Checkout deposit (once per crossing); the wallet is credited when Stripe confirms the payment."""
    cmd = SetAutoRecharge(owner_id=user.id, **body.model_dump())
    result: AutoRecharge = await _billing(gw, subjects.WALLET_AUTO_RECHARGE_SET, cmd, AutoRecharge)
    return result
