"""Wallet API: balance, deposits, transactions, admin credits — answered by the billing service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel

from agentry_common import rpc, subjects
from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import ErrorBody, ValidationFailed
from agentry_common.payment_requests import DepositReply, DepositStarted
from agentry_common.requests import Balance, Deposit, Deposited, GetBalance, ListTransactions, TransactionPage

from ..schemas import AdminCreditBody, DepositBody
from .deps import CurrentAdmin, CurrentUser, GatewayDep

router = APIRouter(prefix="/api", tags=["wallet"], responses=ERROR_RESPONSES)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required. A retry with the same key and body returns the original result.",
        max_length=200,
    ),
]


async def _billing(gw: GatewayDep, subject: str, request: BaseModel, reply: type[Any]) -> Any:
    return await rpc.call(
        gw.nc, subject, request, reply, timeout=gw.settings.rpc_timeout_s, unavailable="billing is unavailable"
    )


def _require(key: str | None) -> str:
    if not key or not key.strip():
        raise ValidationFailed("Idempotency-Key header is required", code="idempotency_key_required")
    return key.strip()


@router.get("/balance")
async def balance(user: CurrentUser, gw: GatewayDep) -> Balance:
    result: Balance = await _billing(gw, subjects.WALLET_BALANCE, GetBalance(owner_id=user.id), Balance)
    return result


@router.post(
    "/balance/deposit",
    status_code=201,
    responses={502: {"model": ErrorBody, "description": "`payment_provider_error`: Stripe could not start the "
                     "payment; retry with the same Idempotency-Key"}},
)  # fmt: skip
async def deposit(
    body: DepositBody, user: CurrentUser, gw: GatewayDep, idempotency_key: IdempotencyKey = None
) -> Deposited | DepositStarted:
    """Top up the caller's wallet. `manual` payment mode: credited at once (`Deposited`). `stripe` payment mode:
    a pending deposit with the `checkout_url` of a Stripe Checkout page (`DepositStarted`); the wallet is
    credited when Stripe confirms the payment."""
    cmd = Deposit(owner_id=user.id, amount_cents=body.amount_cents, idempotency_key=_require(idempotency_key))
    # In stripe mode billing calls Stripe twice (Customer, Checkout Session), with retries: give it longer.
    result = await rpc.call(gw.nc, subjects.WALLET_DEPOSIT, cmd, DepositReply, timeout=4 * gw.settings.rpc_timeout_s,
                            unavailable="billing is unavailable")  # fmt: skip
    return result.root


@router.get("/balance/transactions")
async def transactions(
    user: CurrentUser,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TransactionPage:
    cmd = ListTransactions(owner_id=user.id, limit=limit, cursor=cursor)
    result: TransactionPage = await _billing(gw, subjects.WALLET_TRANSACTIONS, cmd, TransactionPage)
    return result


@router.post("/admin/wallets/{user_id}/credits", status_code=201)
async def admin_credit(
    user_id: str, body: AdminCreditBody, admin: CurrentAdmin, gw: GatewayDep, idempotency_key: IdempotencyKey = None
) -> Deposited:
    """Credit any user's wallet (role admin)."""
    cmd = Deposit(
        owner_id=user_id,
        amount_cents=body.amount_cents,
        idempotency_key=_require(idempotency_key),
        kind="admin_credit",
        reason=body.reason,
        actor_id=admin.id,
    )
    result: Deposited = await _billing(gw, subjects.WALLET_DEPOSIT, cmd, Deposited)
    return result
