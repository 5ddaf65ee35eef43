"""Prometheus metrics of the runner (served on `/metrics` by the shared app)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter("agentry_runner_runs_total", "Runs recorded, by provider and outcome", ["provider", "status"])
RUN_SECONDS = Histogram(
    "agentry_runner_run_seconds",
    "Time a run executed on this runner (queueing excluded)",
    ["provider"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TOKENS = Counter("agentry_runner_tokens_total", "LLM tokens used", ["provider", "direction"])
TOOL_CALLS = Counter("agentry_runner_tool_calls_total", "MCP tool calls, by outcome", ["outcome"])
IN_FLIGHT = Gauge("agentry_runner_runs_in_flight", "Runs executing in this process")
REANNOUNCED = Counter("agentry_runner_reannounced_total", "Deliveries of already finished runs, announced again")
REDELIVERED = Counter("agentry_runner_nak_total", "Runs handed back for redelivery (infrastructure failure)")
