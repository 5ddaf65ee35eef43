"""Requests the billing service answers: balances, deposits, transactions, charges, spend limits."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ..events import Contract


class GetBalance(Contract):
    owner_id: str


class Balance(Contract):
    balance_cents: int
    currency: str = "USD"
    lifetime_deposited_cents: int
    lifetime_spent_cents: int
    uncollected_cents: int


class Deposit(Contract):
    owner_id: str
    amount_cents: int
    idempotency_key: str
    kind: Literal["deposit", "admin_credit"] = "deposit"
    reason: str | None = None
    actor_id: str | None = Field(None, description="Who asked for it (the admin, for admin credits).")


class Transaction(Contract):
    id: str
    kind: Literal["deposit", "run_charge", "admin_credit", "settlement", "refund", "dispute"]
    amount_cents: int
    run_id: str | None = None
    endpoint_id: str | None = None
    status: str
    created_at: datetime


class Deposited(Contract):
    transaction: Transaction
    balance_cents: int
    replayed: bool = Field(False, description="True when this answers a retry of an earlier request.")


class ListTransactions(Contract):
    owner_id: str
    limit: int = 20
    cursor: str | None = None


class TransactionPage(Contract):
    transactions: list[Transaction]
    next_cursor: str | None = None


class GetCharges(Contract):
    run_ids: list[str]


class ChargeStatus(Contract):
    amount_cents: int
    status: Literal["pending", "collected", "uncollected", "none"]


class Charges(Contract):
    charges: dict[str, ChargeStatus] = Field(description="By run id; runs without a charge are absent.")


class SpendLimit(Contract):
    """One cap a run is limited by: a caller key's spend cap or an endpoint's budget."""

    scope: str = Field(description="What the cap belongs to: `key:<key_id>` or `endpoint:<endpoint_id>`.")
    period: Literal["day", "month", "total"]
    cap_cents: int = Field(ge=0)
    code: str = Field("spend_cap_reached", description="The error code of a refusal.")
    what: str = Field("spend cap", description="The cap's name in a refusal's message.")
    endpoint_id: str | None = Field(
        None, description="Set for an endpoint's budget: reaching it publishes `billing.budget.reached`."
    )
    owner_id: str | None = Field(None, description="The endpoint's owner (an endpoint's budget).")


class ReserveSpend(Contract):
    """Hold `amount_cents` in each of the run's limits for one run, all or none: refused (402 with the limit's
    `code`) when one period's settled and held amounts plus it would pass its cap. Idempotent per run id."""

    run_id: str
    amount_cents: int = Field(ge=0, description="The run's per-run price.")
    limits: list[SpendLimit] = Field(min_length=1, description="Every cap the run is limited by.")


class SpendReserved(Contract):
    spent_cents: int = Field(description="The period's settled and held amounts, this run included.")


class ReleaseSpend(Contract):
    """The run was never started (the broker refused it): give its hold back."""

    run_id: str


class SpendScope(Contract):
    scope: str
    period: Literal["day", "month", "total"]


class GetSpent(Contract):
    scopes: list[SpendScope]


class Spent(Contract):
    spent_cents: dict[str, int] = Field(description="By scope: the current period's settled and held amounts.")
