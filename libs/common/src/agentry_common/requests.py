"""Request/reply contracts between services (core NATS, see `rpc`). Requests are imperatives."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .events import Contract, RunError, ToolCall, Usage

# --- keys service ---


class IssueKey(Contract):
    """Issue a new API key for an endpoint, replacing (and revoking) any previous one."""

    endpoint_id: str
    owner_id: str


class IssuedKey(Contract):
    api_key: str = Field(description="The raw key; returned once, never stored in clear.")
    prefix: str


class VerifyKey(Contract):
    api_key: str


class VerifiedKey(Contract):
    endpoint_id: str
    owner_id: str


class RevokeKey(Contract):
    endpoint_id: str


class StoreSecret(Contract):
    owner_id: str
    value: str
    secret_id: str | None = Field(
        None,
        description="Replace this secret's value instead of creating one (runners are told to drop the old one). "
        "The gateway never does: a new value gets a new id.",
    )


class StoredSecret(Contract):
    secret_id: str


class DeleteSecret(Contract):
    secret_id: str


class ResolveSecret(Contract):
    secret_id: str
    owner_id: str = Field(description="The secret must belong to this owner.")


class ResolvedSecret(Contract):
    value: str


class Done(Contract):
    ok: bool = True


# --- billing service ---


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
    kind: Literal["deposit", "run_charge", "admin_credit", "settlement"]
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


# --- runner service ---


class ListRuns(Contract):
    endpoint_id: str
    limit: int = 20
    cursor: str | None = None


class GetRun(Contract):
    run_id: str


class RunRecord(Contract):
    id: str
    endpoint_id: str
    owner_id: str
    status: Literal["queued", "running", "succeeded", "failed", "timeout"]
    is_test: bool = False
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    price_per_run_cents: int = 0
    error: RunError | None = None
    http_status: int | None = Field(None, description="For failed runs: the status a synchronous caller got.")
    created_at: datetime
    finished_at: datetime | None = None


class RunPage(Contract):
    runs: list[RunRecord]
    next_cursor: str | None = None
