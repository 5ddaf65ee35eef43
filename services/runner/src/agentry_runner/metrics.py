"""Prometheus metrics of the runner (served on `/metrics` by the shared app)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .pricing import PRICES

RUNS = Counter(
    "agentry_runner_runs_total", "Runs recorded, by provider, model and outcome", ["provider", "model", "status"]
)
RUN_ERRORS = Counter(
    "agentry_runner_run_errors_total", "Runs recorded failed or timed out, by error code", ["provider", "code"]
)
RUN_SECONDS = Histogram(
    "agentry_runner_run_seconds",
    "Time a run executed on this runner (queueing excluded)",
    ["provider"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
LLM_CALL_SECONDS = Histogram(
    "agentry_runner_llm_call_seconds",
    "One LLM call (retries included), by provider, model and outcome",
    ["provider", "model", "outcome"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
TOKENS = Counter("agentry_runner_tokens_total", "LLM tokens used", ["provider", "model", "direction"])
COST_CENTS = Counter(
    "agentry_runner_cost_cents_total", "Platform token cost of runs with markup, in cents", ["provider", "model"]
)
TOOL_CALLS = Counter("agentry_runner_tool_calls_total", "MCP tool calls, by outcome", ["outcome"])
SECRET_LOOKUPS = Counter(
    "agentry_runner_secret_lookups_total", "Secrets runs needed, by where they came from (cache, keys)", ["source"]
)
IN_FLIGHT = Gauge("agentry_runner_runs_in_flight", "Runs executing in this process")
REANNOUNCED = Counter("agentry_runner_reannounced_total", "Deliveries of already finished runs, announced again")
REDELIVERED = Counter("agentry_runner_nak_total", "Runs handed back for redelivery (infrastructure failure)")
LAST_DELIVERY = Counter(
    "agentry_runner_last_delivery_failures_total",
    "Runs recorded failed without running again: every earlier delivery died mid-run (the runner's dead letters)",
)
CONSUMER_PENDING = Gauge("agentry_runner_consumer_pending", "run.requested not yet delivered to a runner (lag)")
CONSUMER_ACK_PENDING = Gauge("agentry_runner_consumer_ack_pending", "run.requested delivered, not yet acknowledged")

# `llm_model` is free text: a model outside the price list is labelled as itself only while few such names
# have been seen, so a caller cycling model names cannot grow the series without bound.
MAX_UNLISTED_MODELS = 50
OTHER_MODEL = "other"
_unlisted: set[tuple[str, str]] = set()


def model_label(provider: str, model: str) -> str:
    """The model as a label value: its price-list name when listed (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`)."""
    name = model.removeprefix("models/").removeprefix(f"{provider}/")
    listed = [key for key in PRICES.get(provider, {}) if name == key or name.startswith(key)]
    if listed:
        return max(listed, key=len)
    name = name[:64]
    if (provider, name) in _unlisted:
        return name
    if len(_unlisted) < MAX_UNLISTED_MODELS:
        _unlisted.add((provider, name))
        return name
    return OTHER_MODEL
