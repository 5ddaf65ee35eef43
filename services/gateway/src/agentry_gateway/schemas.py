"""HTTP shapes of the gateway (request bodies and responses). Field descriptions reach the OpenAPI document."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from agentry_common.app import MAX_JSON_DEPTH, TOO_DEEP_TEXT
from agentry_common.events import ToolCall, Usage
from agentry_common.requests import ToolInfo

# JSON no store or wire downstream can carry: PostgreSQL text and JSONB refuse NUL and NaN, UTF-8 cannot encode a
# lone surrogate (JSON escapes spell both), the services' JSON encoder stops at 64-bit integers, and Python's JSON
# parser lets NaN and Infinity in. Accepted, such a run could never be recorded, only retried until it failed.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT = "must not contain NUL characters, unpaired surrogates, NaN or Infinity, or integers beyond 64 bits"


class TooDeep(ValueError):
    """A value nested deeper than MAX_JSON_DEPTH: refused before anything recurses through it."""


def unstorable(value: Any, _depth: int = 0) -> bool:
    """Whether `value` holds anything of the above, at any depth (keys of objects included). Raises `TooDeep`
    for a value nested deeper than MAX_JSON_DEPTH."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict | list) and _depth >= MAX_JSON_DEPTH:
        raise TooDeep(TOO_DEEP_TEXT)
    if isinstance(value, dict):
        return any(unstorable(k) or unstorable(v, _depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(unstorable(v, _depth + 1) for v in value)
    return False


class Strict(BaseModel):
    """Request bodies: unknown fields are rejected, types are not coerced ("5" is not 5), and nothing in them may
    be `unstorable`."""

    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                if unstorable(name):
                    raise ValueError(f"body: field names {UNSTORABLE_TEXT}")  # never echo the name itself
                try:
                    bad = unstorable(value, 1)
                except TooDeep as err:
                    raise ValueError(f"{name}: {err}") from None
                if bad:
                    raise ValueError(f"{name}: {UNSTORABLE_TEXT}")
        return data


Name = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Slug = Annotated[str, StringConstraints(max_length=60, min_length=1, pattern=r"^[a-z0-9-]+$")]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://")]
JsonSchema = dict[str, Any]

Provider = Literal["openai", "anthropic", "gemini", "groq", "custom", "mock"]
AgentType = Literal["extractor", "actor", "pipeline"]
OutputFormat = Literal["text", "json", "markdown"]
AuthMode = Literal["api_key", "public"]
EndpointStatus = Literal["active", "disabled"]
BudgetPeriod = Literal["day", "month"]
Budget = Annotated[int, Field(ge=0, le=100_000_000)]


# --- workspaces and MCP servers ---


class WorkspaceCreate(Strict):
    name: Name


class WorkspacePublic(BaseModel):
    id: str = Field(description="`ws_…`")
    name: str
    owner_id: str
    created_at: datetime


class WorkspaceOut(BaseModel):
    workspace: WorkspacePublic


class WorkspaceList(BaseModel):
    workspaces: list[WorkspacePublic]


class ServerCreate(Strict):
    name: Name
    url: Url = Field(description="Streamable-HTTP MCP endpoint.")
    headers: dict[str, str] | None = Field(
        None, description="Sent to the server on every call. Secret: stored encrypted, never returned."
    )

    @model_validator(mode="after")
    def _sendable_headers(self) -> ServerCreate:
        # Caught here, not when a run first calls the server: an HTTP client refuses such a header, and the
        # server would just fail at run time with no word about why.
        for name, value in (self.headers or {}).items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"headers: {name!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
            if _HEADER_VALUE_BAD.search(value):
                raise ValueError(f"headers.{name}: the value must not contain CR, LF or NUL")  # never echo it
        return self


# RFC 9110 §5.1 and §5.5: a field name is a token; a value may not hold CR, LF or NUL.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_BAD = re.compile("[\r\n\x00]")


class ServerPublic(BaseModel):
    id: str = Field(description="`srv_…`")
    workspace_id: str
    name: str
    slug: str = Field(description="Tool names are `<slug>__<tool>`.")
    url: str
    header_names: list[str] = Field(description="Names of the stored headers; their values are never shown.")
    created_at: datetime


class ServerOut(BaseModel):
    server: ServerPublic


class ServerRegistered(ServerOut):
    reachable: bool = Field(
        description="Whether the server answered a `tools/list` just now. It is registered either way."
    )
    tools: int = Field(description="How many tools it offers (0 when it did not answer).")
    problem: str | None = Field(None, description="Why it did not answer, when it did not (never a header value).")


class ServerTools(BaseModel):
    tools: list[ToolInfo] = Field(description="The server's tools as it lists them now.")


class ServerList(BaseModel):
    servers: list[ServerPublic]


# --- endpoints ---


class EndpointFields(Strict):
    """Every configurable field, with its default and limits (ARCHITECTURE.md §3)."""

    name: Name
    workspace_id: str = Field(max_length=64)
    system_prompt: Annotated[str, StringConstraints(min_length=1, max_length=10000)]
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    slug: Slug | None = Field(None, description="Globally unique; derived from the name when omitted.")
    agent_type: AgentType = "extractor"
    llm_provider: Provider = "openai"
    llm_model: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "gpt-4o-mini"
    llm_base_url: Url | None = Field(None, description="OpenAI-compatible API base URL; required for `custom`.")
    llm_api_key: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        None, description="Your own provider key. Write-only: encrypted at rest, never returned."
    )
    max_tokens: Annotated[int, Field(ge=100, le=32768)] = 4096
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.3
    input_schema: JsonSchema | None = Field(None, description="JSON Schema the run input must satisfy.")
    output_schema: JsonSchema | None = Field(None, description="JSON Schema of the output (`json` format).")
    output_format: OutputFormat = "text"
    max_tool_calls: Annotated[int, Field(ge=1, le=50)] = 10
    timeout_ms: Annotated[int, Field(ge=1000, le=300000)] = 30000
    enable_streaming: bool = Field(False, description="Answer runs as server-sent events.")
    async_mode: bool = Field(False, description="Answer runs with 202 and a status URL.")
    auth_mode: AuthMode = "api_key"
    price_per_run_cents: Annotated[int, Field(ge=0, le=10000)] = Field(
        0, description="Charged to the owner's wallet per successful run (integer cents)."
    )
    budget_cents: Budget | None = Field(
        None,
        description="Most the endpoint's per-run prices may add up to in a period (collected or not); a run that "
        "would pass it answers 402 `endpoint_budget_reached`. Null: no budget (and no pre-check).",
    )
    budget_period: BudgetPeriod = Field("month", description="The budget's period: a calendar `day` or `month` (UTC).")

    @model_validator(mode="after")
    def _custom_needs_base_url(self) -> EndpointFields:
        if self.llm_provider == "custom" and not self.llm_base_url:
            raise ValueError("llm_base_url: required when llm_provider is custom")
        return self


class EndpointCreate(EndpointFields):
    pass


class EndpointUpdate(Strict):
    """Partial update: only the fields sent change; `llm_api_key: null` removes a stored key."""

    name: Name | None = None
    system_prompt: Annotated[str, StringConstraints(min_length=1, max_length=10000)] | None = None
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    slug: Slug | None = None
    agent_type: AgentType | None = None
    llm_provider: Provider | None = None
    llm_model: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    llm_base_url: Url | None = None
    llm_api_key: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    max_tokens: Annotated[int, Field(ge=100, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    input_schema: JsonSchema | None = None
    output_schema: JsonSchema | None = None
    output_format: OutputFormat | None = None
    max_tool_calls: Annotated[int, Field(ge=1, le=50)] | None = None
    timeout_ms: Annotated[int, Field(ge=1000, le=300000)] | None = None
    enable_streaming: bool | None = None
    async_mode: bool | None = None
    auth_mode: AuthMode | None = None
    price_per_run_cents: Annotated[int, Field(ge=0, le=10000)] | None = None
    budget_cents: Budget | None = Field(None, description="`null` removes the budget.")
    budget_period: BudgetPeriod | None = None
    status: EndpointStatus | None = None

    # Fields that may be sent as null to clear them; for every other field null is a validation error.
    NULLABLE: ClassVar[frozenset[str]] = frozenset(
        {"description", "llm_base_url", "llm_api_key", "input_schema", "output_schema", "budget_cents"}
    )

    @model_validator(mode="after")
    def _no_null_for_required(self) -> EndpointUpdate:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.NULLABLE:
                raise ValueError(f"{name}: may not be null")
        return self


class EndpointPublic(BaseModel):
    id: str = Field(description="`aep_…`")
    owner_id: str
    workspace_id: str
    name: str
    slug: str
    description: str | None
    system_prompt: str
    agent_type: AgentType
    llm_provider: Provider
    llm_model: str
    llm_base_url: str | None
    has_llm_api_key: bool = Field(description="Whether a BYO provider key is stored (its value never is shown).")
    max_tokens: int
    temperature: float
    input_schema: JsonSchema | None
    output_schema: JsonSchema | None
    output_format: OutputFormat
    max_tool_calls: int
    timeout_ms: int
    enable_streaming: bool
    async_mode: bool
    auth_mode: AuthMode
    price_per_run_cents: int
    budget_cents: int | None = Field(None, description="The budget per period, in cents; null: none.")
    budget_period: BudgetPeriod = "month"
    api_key_prefix: str | None = Field(description="First characters of the API key, for recognising it.")
    status: EndpointStatus
    created_at: datetime
    updated_at: datetime


class EndpointOut(BaseModel):
    endpoint: EndpointPublic


class EndpointCreated(BaseModel):
    endpoint: EndpointPublic
    api_key: str = Field(description="The raw `aek_` key. Shown only here and by regenerate-key: store it.")
    run_url: str = Field(description="`/api/run/<slug>`")


class EndpointList(BaseModel):
    endpoints: list[EndpointPublic]


class ApiKeyOut(BaseModel):
    api_key: str = Field(
        description="The new raw `default` key; the old one stops working at once, or after `grace_seconds`."
    )


# --- runs ---


class RunBody(Strict):
    input: str | dict[str, Any] = Field(description="The agent's input: text or a JSON object.")


class RunResult(BaseModel):
    run_id: str
    output: Any = Field(description="Text, or the parsed JSON value for `json` endpoints.")
    usage: Usage
    tool_calls: list[ToolCall] = Field(
        default_factory=list, description="The MCP tool calls the run made, in order (as the SSE `done` event)."
    )


class RunAccepted(BaseModel):
    run_id: str
    status: Literal["queued"] = "queued"
    status_url: str


class RunStatus(BaseModel):
    run_id: str
    status: Literal["queued", "running", "succeeded", "failed", "timeout"]
    output: Any = None
    usage: Usage | None = None
    error: dict[str, str] | None = None


class Charge(BaseModel):
    amount_cents: int
    status: Literal["pending", "collected", "uncollected", "none"]


class RunHistoryItem(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "timeout"]
    tokens_input: int
    tokens_output: int
    cost_cents: float
    latency_ms: int
    iterations: int
    tool_calls: list[ToolCall]
    tool_errors: int = Field(description="How many of `tool_calls` failed (the run went on; the model was told).")
    charge: Charge
    is_test: bool
    key_id: str | None = Field(description="The API key the run was made with; null for public and test runs.")
    error: dict[str, str] | None
    created_at: datetime


class RunHistory(BaseModel):
    runs: list[RunHistoryItem]
    next_cursor: str | None


# --- wallet ---


class DepositBody(Strict):
    amount_cents: Annotated[int, Field(ge=500, le=50000)]


class AutoRechargeBody(Strict):
    enabled: bool = Field(description="Charge the saved card when the balance falls below the threshold.")
    threshold_cents: Annotated[int, Field(ge=0, le=10_000_000, description="Recharge below this balance.")]
    amount_cents: Annotated[int, Field(ge=500, le=50000, description="How much each recharge adds.")]


class BalanceAlertsBody(Strict):
    low_balance_cents: int | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="A `balance.low` webhook is sent once each time a charge takes the balance below this many "
        "cents (again after a credit lifts it back); null = no alert.",
    )


class AdminCreditBody(Strict):
    amount_cents: Annotated[int, Field(ge=1, le=10_000_000)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
