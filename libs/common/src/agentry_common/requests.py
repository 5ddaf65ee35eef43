"""Request/reply contracts between services (core NATS, see `rpc`). Requests are imperatives."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .events import Contract, McpServerRef, RunError, ToolCall, Usage

# --- keys service ---


class IssueKey(Contract):
    """Issue the endpoint's `default` key, replacing (and revoking) the previous `default` one."""

    endpoint_id: str
    owner_id: str
    grace_seconds: int = Field(0, ge=0, le=86400, description="How long the replaced key keeps working.")


class IssuedKey(Contract):
    api_key: str = Field(description="The raw key; returned once, never stored in clear.")
    prefix: str


class VerifyKey(Contract):
    api_key: str


SpendCapPeriod = Literal["day", "month", "total"]


class VerifiedKey(Contract):
    """A valid key's verdict. Gateways cache it and check `expires_at`/`revoked_at` themselves on every use,
    so expiry and the end of a grace period need no message."""

    endpoint_id: str
    owner_id: str
    key_id: str | None = Field(None, description="The key (`key_…`); runs carry it.")
    expires_at: datetime | None = Field(None, description="When the key expires (401 `api_key_expired`).")
    revoked_at: datetime | None = Field(None, description="A future revocation: the end of a grace period.")
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod = "month"


class RevokeKey(Contract):
    """Revoke one key of the endpoint (`key_id`), or delete all its keys (the endpoint is going away)."""

    endpoint_id: str
    key_id: str | None = None


class KeyFields(Contract):
    name: str
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod = "month"


class CreateKey(KeyFields):
    endpoint_id: str
    owner_id: str


class UpdateKey(Contract):
    endpoint_id: str
    key_id: str
    name: str | None = None
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod | None = None
    sent: list[str] = Field(description="The fields to change (the others above are not read).")


class KeyInfo(KeyFields):
    """A key as its owner sees it: never the key, only a display prefix."""

    id: str
    endpoint_id: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class CreatedKey(Contract):
    key: KeyInfo
    api_key: str = Field(description="The raw key; returned once, never stored in clear.")


class ListKeys(Contract):
    endpoint_id: str
    key_id: str | None = None


class KeyList(Contract):
    keys: list[KeyInfo]


class KeysUsed(Contract):
    """Gateways report, at most once a minute per key, when keys were last used (no write per run)."""

    used: dict[str, datetime] = Field(description="By key id: the latest use this gateway saw.")


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
    reply_key: str = Field(
        description="The asking process's X25519 public key (base64url, `agentry_common.sealed`): the value comes "
        "back sealed to it, so a copy of the reply taken off the bus is unreadable.",
    )


class ResolvedSecret(Contract):
    sealed: str = Field(description="The secret sealed to the request's `reply_key` (HPKE); never in clear.")


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


# --- runner service ---


class ListRuns(Contract):
    endpoint_id: str
    limit: int = 20
    cursor: str | None = None
    key_id: str | None = Field(None, description="Only the runs made with this API key.")


class GetRun(Contract):
    run_id: str


class RunRecord(Contract):
    id: str
    endpoint_id: str
    owner_id: str
    status: Literal["queued", "running", "succeeded", "failed", "timeout"]
    is_test: bool = False
    key_id: str | None = Field(None, description="The caller's API key; null for public and test runs.")
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_errors: int = Field(0, description="How many of `tool_calls` failed.")
    price_per_run_cents: int = 0
    error: RunError | None = None
    http_status: int | None = Field(None, description="For failed runs: the status a synchronous caller got.")
    created_at: datetime
    finished_at: datetime | None = None


class RunPage(Contract):
    runs: list[RunRecord]
    next_cursor: str | None = None


class ListTools(Contract):
    """List the tools an MCP server offers now (its headers resolved by the runner, never sent here)."""

    server: McpServerRef
    owner_id: str = Field(description="The server's owner: its headers secret must be theirs.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Give up on the server after this long.")


class ToolInfo(Contract):
    name: str = Field(description="The tool's name on its server.")
    llm_name: str = Field(description="The name a run's model calls it by: `<server slug>__<name>`.")
    description: str = Field("", description="What the server says the tool does.")
    input_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of its arguments.")


class ToolList(Contract):
    tools: list[ToolInfo]


# --- webhooks service ---

WebhookEventType = Literal[
    "run.succeeded",
    "run.failed",
    "charge.collected",
    "charge.uncollected",
    "balance.low",
    "budget.reached",
    "key.expiring",
    "deposit.succeeded",
]
DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookInfo(Contract):
    """An owner's webhook subscription, as shown to the owner. Never carries the signing secret."""

    id: str = Field(description="`wh_…`")
    url: str = Field(description="Where events are POSTed (http or https).")
    events: list[WebhookEventType] = Field(description="The event types this webhook receives.")
    description: str | None = Field(None, description="The owner's note.")
    enabled: bool = Field(description="A disabled webhook receives no new deliveries and stops retrying.")
    created_at: datetime


class CreateWebhook(Contract):
    owner_id: str
    url: str
    events: list[WebhookEventType]
    description: str | None = None


class CreatedWebhook(Contract):
    webhook: WebhookInfo
    secret: str = Field(description="The signing secret `whsec_…`: returned once, here, never again.")


class ListWebhooks(Contract):
    owner_id: str


class WebhookList(Contract):
    webhooks: list[WebhookInfo]


class WebhookRef(Contract):
    owner_id: str = Field(description="The webhook must belong to this owner (else 404).")
    webhook_id: str


class UpdateWebhook(WebhookRef):
    url: str | None = None
    events: list[WebhookEventType] | None = None
    description: str | None = None
    enabled: bool | None = None
    fields: list[str] = Field(default_factory=list, description="The fields the caller set (PATCH is partial).")


class WebhookOut(Contract):
    webhook: WebhookInfo


class DeliveryAttempt(Contract):
    at: datetime = Field(description="When the attempt started.")
    response_status: int | None = Field(None, description="The receiver's HTTP status; null when it did not answer.")
    latency_ms: int = Field(description="From sending to the answer (or to giving up).")
    error: str | None = Field(None, description="Why the attempt failed, when it did (`timeout`, `http_500`, …).")


class Delivery(Contract):
    id: str = Field(description="`whd_…`, also the `webhook-id` header: the same on every attempt.")
    webhook_id: str
    event_type: str = Field(description="One of the webhook's event types, or `webhook.test`.")
    status: DeliveryStatus
    attempts: list[DeliveryAttempt] = Field(description="Every attempt, oldest first.")
    next_attempt_at: datetime | None = Field(None, description="When the next attempt is due (pending only).")
    created_at: datetime


class ListDeliveries(WebhookRef):
    limit: int = 20
    cursor: str | None = None


class DeliveryPage(Contract):
    deliveries: list[Delivery] = Field(description="Newest first.")
    next_cursor: str | None = None


class DeliveryRef(WebhookRef):
    delivery_id: str


class DeliveryOut(Contract):
    delivery: Delivery
