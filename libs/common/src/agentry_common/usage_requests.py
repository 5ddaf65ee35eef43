"""Request/reply contracts of usage analytics and balance alerts, between the gateway and billing.

Kept apart from `requests` (and `payment_requests`) so each feature's contracts stay short; the reply shapes are
also the public API's (the gateway answers them as they come).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .events import Contract

Granularity = Literal["hour", "day", "month"]
GroupBy = Literal["none", "endpoint", "key"]
MAX_BUCKETS = 10_000


class GetUsage(Contract):
    owner_id: str
    start: datetime = Field(description="Inclusive, already truncated to the granularity (UTC).")
    end: datetime = Field(description="Exclusive (UTC).")
    granularity: Granularity = "day"
    group_by: GroupBy = "none"
    endpoint_id: str | None = None
    key_id: str | None = None


class UsageCounters(Contract):
    runs: int = Field(0, description="Runs that ended (succeeded + failed), test runs included.")
    succeeded: int = Field(0, description="Runs that succeeded.")
    failed: int = Field(0, description="Runs that failed or timed out.")
    tokens_input: int = Field(0, description="Input tokens over every LLM call of these runs.")
    tokens_output: int = Field(0, description="Output tokens over every LLM call of these runs.")
    cost_cents: float = Field(0.0, description="Platform token cost with markup (reported, never charged).")
    charged_cents: int = Field(
        0, description="Per-run prices debited from the wallet: collected at once or settled by a later credit."
    )
    uncollected_cents: int = Field(
        0, description="Per-run prices recorded but not (yet) covered by the wallet; they move to `charged_cents` "
        "when a credit settles them."
    )  # fmt: skip
    latency_ms_p50: int | None = Field(
        None, description="Median run latency, from a fixed-bucket histogram (within 12.5%); null without runs."
    )
    latency_ms_p95: int | None = Field(
        None, description="95th percentile run latency, from the same histogram (within 12.5%); null without runs."
    )


class UsageBucket(UsageCounters):
    start: datetime = Field(description="Start of the bucket (UTC): the hour, day or month it covers.")
    endpoint_id: str | None = Field(None, description="With `group_by=endpoint`: the endpoint.")
    key_id: str | None = Field(
        None, description="With `group_by=key`: the caller's API key; null for runs without one (tests, public)."
    )


class UsageReport(Contract):
    buckets: list[UsageBucket] = Field(description="Non-empty buckets only, oldest first.")
    totals: UsageCounters = Field(description="The same counters over the whole period (and filters).")


class GetBalanceAlerts(Contract):
    owner_id: str


class BalanceAlerts(Contract):
    low_balance_cents: int | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="A `balance.low` webhook is sent once each time a charge takes the balance below this many "
        "cents (again after a credit lifts it back); null = no alert.",
    )


class SetBalanceAlerts(BalanceAlerts):
    owner_id: str
