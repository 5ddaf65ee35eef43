"""Requests the runner service answers: run records and pages, an MCP server's tools."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ..events import Contract, McpServerRef, RunError, ToolCall, Usage


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
