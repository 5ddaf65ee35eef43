"""Typed event contracts. Events are facts in the past tense; additive changes only within a `version`.

Every event has `id`, `type`, `version`, `occurred_at` and `trace` (W3C trace context), and is published with
`Nats-Msg-Id` set from its natural key (see `Event.msg_id`) so broker de-duplication catches replays.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, TypeAdapter, model_serializer


def new_id(prefix: str) -> str:
    """A prefixed random id, e.g. `run_3f9c…` (128 bits)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every wire shape. Validation errors never echo their input: it may hold a secret."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


class Event(Contract):
    id: str = Field(default_factory=lambda: new_id("evt"), description="Unique id of this event.")
    type: str = Field(description="The event type, also its subject for events on JetStream.")
    version: int = Field(default=1, description="Schema version of this event type.")
    occurred_at: datetime = Field(default_factory=utcnow, description="When the fact happened (UTC).")
    trace: dict[str, str] = Field(default_factory=dict, description="W3C trace context (`traceparent`).")

    def msg_id(self) -> str:
        """The `Nats-Msg-Id` of this event: its natural key, so a replay is de-duplicated by the broker."""
        return f"{self.type}:{self.id}"


class Usage(Contract):
    tokens_input: int = Field(0, ge=0, description="Input tokens summed over every LLM call of the run.")
    tokens_output: int = Field(0, ge=0, description="Output tokens summed over every LLM call of the run.")
    cost_cents: float = Field(0.0, ge=0, description="Platform token cost with markup; reported, not charged.")
    latency_ms: int = Field(0, ge=0, description="Wall-clock time from request to result.")
    iterations: int = Field(0, ge=0, description="Number of LLM calls made.")


class McpServerRef(Contract):
    slug: str
    url: str
    headers_secret_id: str | None = Field(None, description="Secret holding the server's headers, if any.")


class EndpointSnapshot(Contract):
    """The endpoint's configuration at request time; never holds a secret in clear, only secret ids."""

    id: str
    slug: str
    owner_id: str
    workspace_id: str
    agent_type: str = "extractor"
    system_prompt: str
    llm_provider: str = "openai"
    llm_model: str = "gpt-4o-mini"
    llm_base_url: str | None = None
    llm_secret_id: str | None = Field(None, description="Secret id of the owner's own LLM key (BYO).")
    max_tokens: int = 4096
    temperature: float = 0.3
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    output_format: Literal["text", "json", "markdown"] = "text"
    max_tool_calls: int = 10
    timeout_ms: int = 30000
    enable_streaming: bool = False
    async_mode: bool = False
    price_per_run_cents: int = 0
    budget_cents: int | None = Field(None, description="The endpoint's budget per period (null: none).")
    budget_period: Literal["day", "month"] = "month"
    servers: list[McpServerRef] = Field(default_factory=list)


class ChatTurn(Contract):
    """One earlier turn of a conversation (OpenAI-compatible runs): sent to the model before the input."""

    role: Literal["user", "assistant"] = Field(description="Who said it.")
    content: str = Field(description="What was said, as text.")


class RunRequested(Event):
    type: Literal["run.requested"] = "run.requested"
    run_id: str = Field(description="The run's id (`run_…`), returned to the caller.")
    endpoint: EndpointSnapshot = Field(description="The endpoint's configuration when the run was requested.")
    input: str | dict[str, Any] = Field(description="The caller's input: a string or a JSON object.")
    is_test: bool = Field(False, description="Owner test run: never charged the per-run price.")
    history: list[ChatTurn] = Field(
        default_factory=list,
        description="Earlier conversation turns, oldest first; the model reads them between the endpoint's "
        "system prompt and the input. Empty for `/api/run` runs.",
    )
    key_id: str | None = Field(None, description="The caller's API key (`key_…`); null for public and test runs.")
    requested_at: datetime = Field(default_factory=utcnow, description="When the gateway accepted the run.")

    def msg_id(self) -> str:
        return f"run.requested:{self.run_id}"


class ToolCall(Contract):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    latency_ms: int = 0


# Splits a run's error message into what its caller is told and, after it, the LLM provider's own error text
# (redacted of any fragment of the key), which only the endpoint's owner sees: history and `run.failed`.
PROVIDER_SAID = " — the provider said: "


class RunError(Contract):
    code: str = Field(description="Stable snake_case error code, e.g. `llm_provider_error`, `timeout`.")
    message: str = Field(
        description="Human-readable explanation; never holds a secret. For the endpoint's owner it may end with "
        "` — the provider said: …`, the LLM provider's own error text, redacted; callers never get that part."
    )

    def for_caller(self) -> RunError:
        """The error as the run's caller is told it: without the provider's own text."""
        return RunError(code=self.code, message=self.message.partition(PROVIDER_SAID)[0])


class _RunOutcome(Event):
    run_id: str = Field(description="The run's id (`run_…`).")
    endpoint_id: str = Field(description="The endpoint that ran (`aep_…`).")
    owner_id: str = Field(description="The endpoint's owner, whose wallet pays the per-run price.")
    price_per_run_cents: int = Field(0, ge=0, description="Per-run price at request time, in cents.")
    is_test: bool = Field(False, description="Owner test run: never charged the per-run price.")
    usage: Usage = Field(default_factory=Usage, description="What the run consumed.")
    key_id: str | None = Field(None, description="The caller's API key (`key_…`); null for public and test runs.")

    def msg_id(self) -> str:
        return f"{self.type}:{self.run_id}"


class RunCompleted(_RunOutcome):
    type: Literal["run.completed"] = "run.completed"
    status: Literal["succeeded"] = "succeeded"
    tool_errors: int = Field(0, ge=0, description="How many of the run's tool calls failed (the run went on).")


class RunFailed(_RunOutcome):
    type: Literal["run.failed"] = "run.failed"
    status: Literal["failed", "timeout"] = "failed"
    error: RunError = Field(
        description="Why the run failed: what its caller was told and, for the owner, the provider's own "
        "(redacted) error text."
    )


class _ChargeOutcome(Event):
    charge_id: str = Field(description="The charge's id; one charge per run.")
    run_id: str = Field(description="The run charged for.")
    endpoint_id: str = Field(description="The endpoint that ran.")
    owner_id: str = Field(description="The wallet's owner.")
    amount_cents: int = Field(ge=0, description="The run's price, in cents.")

    def msg_id(self) -> str:
        return f"{self.type}:{self.charge_id}"


class ChargeCollected(_ChargeOutcome):
    type: Literal["billing.charge.collected"] = "billing.charge.collected"
    status: Literal["collected"] = "collected"


class ChargeUncollected(_ChargeOutcome):
    type: Literal["billing.charge.uncollected"] = "billing.charge.uncollected"
    status: Literal["uncollected"] = "uncollected"


class BalanceLow(Event):
    """A charge took the owner's balance below their low-balance threshold: once per crossing (re-armed when a
    credit lifts the balance back to the threshold or above)."""

    type: Literal["billing.balance.low"] = "billing.balance.low"
    owner_id: str = Field(description="The wallet's owner.")
    balance_cents: int = Field(description="The balance right after the charge, in cents.")
    threshold_cents: int = Field(description="The owner's `low_balance_cents` at that moment.")
    crossing: int = Field(ge=1, description="How many times this wallet has crossed its threshold (1, 2, …).")

    def msg_id(self) -> str:
        return f"{self.type}:{self.owner_id}:{self.crossing}"


class DepositSucceeded(Event):
    """Money reached the owner's wallet: a manual-mode deposit or a Stripe payment (checkout or auto-recharge).
    Admin credits are not deposits and are not announced."""

    type: Literal["billing.deposit.succeeded"] = "billing.deposit.succeeded"
    owner_id: str = Field(description="The wallet's owner.")
    deposit_id: str = Field(
        description="The deposit as `GET /api/balance/deposits` lists it: `dep_…` for a Stripe deposit, the "
        "credit's `crd_…` for a manual-mode one."
    )
    amount_cents: int = Field(gt=0, description="The amount credited, in cents.")

    def msg_id(self) -> str:
        return f"{self.type}:{self.deposit_id}"


class BudgetReached(Event):
    """An endpoint's budget is used up for its period: a run was refused for it (402 `endpoint_budget_reached`),
    or a run took the period's prices exactly to it. Published once per endpoint, period and budget amount."""

    type: Literal["billing.budget.reached"] = "billing.budget.reached"
    owner_id: str = Field(description="The endpoint's owner.")
    endpoint_id: str = Field(description="The endpoint whose budget is reached.")
    budget_cents: int = Field(ge=0, description="The budget, in cents per period.")
    budget_period: Literal["day", "month"] = Field(description="The budget's period (calendar, UTC).")
    period_start: datetime = Field(description="Start of the period whose budget is reached (UTC).")

    def msg_id(self) -> str:
        return f"{self.type}:{self.endpoint_id}:{self.period_start.isoformat()}:{self.budget_cents}"


class KeyExpiring(Event):
    """A caller key expires within a week. Published once per key and expiry time: a key whose expiry is
    changed (and still within the week) is announced again; a revoked key is not."""

    type: Literal["keys.key.expiring"] = "keys.key.expiring"
    owner_id: str = Field(description="The endpoint's owner.")
    endpoint_id: str = Field(description="The endpoint the key calls.")
    key_id: str = Field(description="The key (`key_…`); never the key itself.")
    expires_at: datetime = Field(description="When the key stops working (UTC).")

    def msg_id(self) -> str:
        return f"{self.type}:{self.key_id}:{self.expires_at.isoformat()}"


class KeysRevoked(Event):
    """Broadcast by the keys service when an endpoint's key stops being valid; gateways drop cached verdicts."""

    type: Literal["keys.revoked"] = "keys.revoked"
    endpoint_id: str = Field(description="The endpoint whose previous API key no longer works.")
    key_id: str | None = Field(
        None, description="The key that changed (revoked, or its limits changed); null: all of the endpoint's."
    )


class CatalogChanged(Event):
    """Broadcast by a gateway after committing a change to an endpoint or a workspace (its MCP servers): every
    gateway replica drops its cached configs of it at once."""

    type: Literal["catalog.changed"] = "catalog.changed"
    endpoint_id: str | None = Field(None, description="The endpoint that changed, if the change was to one.")
    workspace_id: str | None = Field(None, description="The workspace whose endpoints all changed (an MCP server).")


class SecretsChanged(Event):
    """Broadcast by the keys service after a secret was deleted or its value replaced: every runner drops what it
    holds of these secrets at once. Ids only, never a value."""

    type: Literal["secrets.changed"] = "secrets.changed"
    secret_ids: list[str] = Field(description="The secrets whose value is gone or changed.")


ProgressKind = Literal["thinking", "tool_call", "tool_result", "done", "error"]


# The `data` of each kind of progress: what a streaming caller gets in the SSE event of that name. Field order
# is the wire's key order, so keep it.
class ThinkingData(Contract):
    iteration: int = Field(ge=1, description="Which LLM call of the run is starting (1 for the first).")


class ToolCallData(Contract):
    name: str = Field(description="The tool the model called (`<server slug>__<tool>`).")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The arguments the model gave it.")


class ToolResultData(Contract):
    name: str = Field(description="The tool that answered.")
    result: Any = Field(None, description="What it returned, clipped like the run record's; null on error.")
    error: str | None = Field(None, description="Why the call failed, if it did (the run goes on).")
    latency_ms: int = Field(0, ge=0, description="How long the call took.")


class DoneData(Contract):
    output: Any = Field(None, description="The run's output: text, or the JSON value for `output_format: json`.")
    usage: Usage = Field(default_factory=Usage, description="What the run consumed.")
    tool_calls: list[ToolCall] = Field(default_factory=list, description="The run's tool calls, in order.")


class ErrorData(Contract):
    code: str = Field(description="Stable snake_case error code, e.g. `llm_provider_error`, `timeout`.")
    message: str = Field(description="What the caller is told (never the provider's own words, never a secret).")
    status: int = Field(description="The HTTP status the caller gets for this error (e.g. 502, 504).")
    usage: Usage | None = Field(
        None, description="What the run consumed; absent when the gateway, not the runner, ends the run."
    )

    @model_serializer(mode="wrap")
    def _without_absent_usage(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An error the gateway made up (a lost answer) never had a usage: its frame has no `usage` key at all.
        data: dict[str, Any] = handler(self)
        if self.usage is None:
            data.pop("usage", None)
        return data


ProgressData = ThinkingData | ToolCallData | ToolResultData | DoneData | ErrorData


class _Progress(Event):
    """Ephemeral progress of one run on `run.progress.<run_id>`; `done` and `error` are terminal."""

    type: Literal["run.progress"] = "run.progress"
    run_id: str = Field(description="The run this progress belongs to.")
    event: ProgressKind = Field(description="The SSE event name; `done` and `error` end the run.")

    @property
    def terminal(self) -> bool:
        return self.event in ("done", "error")


class ThinkingProgress(_Progress):
    """An LLM call of the run starts."""

    event: Literal["thinking"] = Field("thinking", description="The SSE event name.")
    data: ThinkingData = Field(description="The SSE event's data.")


class ToolCallProgress(_Progress):
    """The model called a tool; its result follows."""

    event: Literal["tool_call"] = Field("tool_call", description="The SSE event name.")
    data: ToolCallData = Field(description="The SSE event's data.")


class ToolResultProgress(_Progress):
    """A tool call ended (with its result or its error)."""

    event: Literal["tool_result"] = Field("tool_result", description="The SSE event name.")
    data: ToolResultData = Field(description="The SSE event's data.")


class DoneProgress(_Progress):
    """The run succeeded and is recorded (terminal)."""

    event: Literal["done"] = Field("done", description="The SSE event name; ends the run.")
    data: DoneData = Field(description="The SSE event's data.")


class ErrorProgress(_Progress):
    """The run failed or timed out and is recorded, or the gateway gave up waiting (terminal)."""

    event: Literal["error"] = Field("error", description="The SSE event name; ends the run.")
    data: ErrorData = Field(description="The SSE event's data.")


# One message on `run.progress.<run_id>`: `{..., "event": <kind>, "data": {...}}`, its `data` typed by `event`.
RunProgress = Annotated[
    ThinkingProgress | ToolCallProgress | ToolResultProgress | DoneProgress | ErrorProgress,
    Field(discriminator="event", title="RunProgress"),  # the title names its schema in docs/asyncapi.json
]
run_progress: TypeAdapter[RunProgress] = TypeAdapter(RunProgress)
_PROGRESS_OF: dict[type[Contract], type[_Progress]] = {
    ThinkingData: ThinkingProgress,
    ToolCallData: ToolCallProgress,
    ToolResultData: ToolResultProgress,
    DoneData: DoneProgress,
    ErrorData: ErrorProgress,
}


def progress_of(run_id: str, data: ProgressData, **fields: Any) -> RunProgress:
    """The progress message carrying `data`: its kind (`event`) follows from the data's type."""
    return cast(RunProgress, _PROGRESS_OF[type(data)](run_id=run_id, data=data, **fields))


AnyEvent = Annotated[
    RunRequested
    | RunCompleted
    | RunFailed
    | ChargeCollected
    | ChargeUncollected
    | BalanceLow
    | DepositSucceeded
    | BudgetReached
    | KeyExpiring
    | KeysRevoked
    | RunProgress,
    Field(discriminator="type"),
]
any_event: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
