"""The API's objects as typed models. Unknown fields are kept (`extra="allow"`), so a newer server never breaks
an older SDK; `tests/test_coverage.py` fails when the server has a field a model here does not declare."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Workspace(Model):
    id: str
    name: str
    owner_id: str
    created_at: datetime


class Server(Model):
    id: str
    workspace_id: str
    name: str
    slug: str
    url: str
    header_names: list[str] = Field(default_factory=list)
    created_at: datetime


class Endpoint(Model):
    id: str
    owner_id: str
    workspace_id: str
    name: str
    slug: str
    description: str | None = None
    system_prompt: str
    agent_type: str
    llm_provider: str
    llm_model: str
    llm_base_url: str | None = None
    has_llm_api_key: bool = False
    max_tokens: int
    temperature: float
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    output_format: str
    max_tool_calls: int
    timeout_ms: int
    enable_streaming: bool
    async_mode: bool
    auth_mode: str
    price_per_run_cents: int
    budget_cents: int | None = None
    budget_period: str = "month"
    api_key_prefix: str | None = None
    status: str
    created_at: datetime
    updated_at: datetime


class EndpointCreated(Model):
    endpoint: Endpoint
    api_key: str = Field(description="The raw key: shown only here and by regenerate-key.")
    run_url: str


class Usage(Model):
    tokens_input: int = 0
    tokens_output: int = 0
    cost_cents: float = 0.0
    latency_ms: int = 0
    iterations: int = 0


class ToolCall(Model):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    latency_ms: int = 0


class RunResult(Model):
    run_id: str
    output: Any = None
    usage: Usage
    tool_calls: list[ToolCall] = Field(default_factory=list)


class RunAccepted(Model):
    run_id: str
    status: Literal["queued"] = "queued"
    status_url: str


RunState = Literal["queued", "running", "succeeded", "failed", "timeout"]


class RunStatus(Model):
    run_id: str
    status: RunState
    output: Any = None
    usage: Usage | None = None
    error: dict[str, str] | None = None


class Charge(Model):
    amount_cents: int
    status: str


class Run(Model):
    """A run as history lists it."""

    id: str
    status: RunState
    tokens_input: int
    tokens_output: int
    cost_cents: float
    latency_ms: int
    iterations: int
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_errors: int = 0
    charge: Charge
    is_test: bool
    key_id: str | None = None
    error: dict[str, str] | None = None
    created_at: datetime


class RunPage(Model):
    runs: list[Run]
    next_cursor: str | None = None


class Balance(Model):
    balance_cents: int
    currency: str = "USD"
    lifetime_deposited_cents: int
    lifetime_spent_cents: int
    uncollected_cents: int


class Transaction(Model):
    id: str
    kind: str
    amount_cents: int
    run_id: str | None = None
    endpoint_id: str | None = None
    status: str
    created_at: datetime


class TransactionPage(Model):
    transactions: list[Transaction]
    next_cursor: str | None = None


class Deposited(Model):
    transaction: Transaction
    balance_cents: int
    replayed: bool = False


class StreamEvent(Model):
    """One server-sent event of a streamed run: `thinking`, `tool_call`, `tool_result` or `done`.
    (An `error` event is raised as the typed error instead.)"""

    event: str
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def result(self) -> RunResult | None:
        """The run's result, on the `done` event."""
        return RunResult.model_validate(self.data) if self.event == "done" else None


class ToolInfo(Model):
    """A tool an MCP server offers, as the runner lists it."""

    name: str
    llm_name: str = Field(description="The name the LLM sees (`<server slug>__<tool>`).")
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)


# --- caller keys ---

SpendCapPeriod = Literal["day", "month", "total"]


class Key(Model):
    """One of an endpoint's caller keys; never the key itself (only `KeyCreated.api_key`, once)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    spend_cap_cents: int | None = None
    spend_cap_period: SpendCapPeriod = "month"
    spent_cents: int | None = None
    revoked_at: datetime | None = None


class KeyCreated(Model):
    key: Key
    api_key: str = Field(description="The raw key: shown only here.")


# --- webhooks ---


class Webhook(Model):
    id: str
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool
    created_at: datetime


class WebhookCreated(Model):
    webhook: Webhook
    secret: str = Field(description="The signing secret (`whsec_…`): shown only here.")


class DeliveryAttempt(Model):
    at: datetime
    response_status: int | None = None
    latency_ms: int
    error: str | None = None


class Delivery(Model):
    id: str
    webhook_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime


class DeliveryPage(Model):
    deliveries: list[Delivery]
    next_cursor: str | None = None


# --- payments, alerts and usage ---


class DepositRecord(Model):
    """A deposit through the payment provider: `pending` until it is paid (then `succeeded`)."""

    id: str
    status: Literal["pending", "succeeded", "failed", "expired"]
    amount_cents: int
    currency: str = "USD"
    source: str
    checkout_url: str | None = None
    created_at: datetime
    completed_at: datetime | None = None


class DepositStarted(Model):
    """`deposit()`'s answer in Stripe mode: pay at `deposit.checkout_url`; the wallet is credited once paid."""

    deposit: DepositRecord


class AutoRecharge(Model):
    enabled: bool
    threshold_cents: int
    amount_cents: int
    has_payment_method: bool


class BalanceAlerts(Model):
    low_balance_cents: int | None = None


class UsageBucket(Model):
    start: datetime | None = None  # None in `totals`
    endpoint_id: str | None = None
    key_id: str | None = None
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    cost_cents: float = 0.0
    charged_cents: int = 0
    uncollected_cents: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None


class UsageReport(Model):
    buckets: list[UsageBucket]
    totals: UsageBucket = Field(default_factory=UsageBucket)
