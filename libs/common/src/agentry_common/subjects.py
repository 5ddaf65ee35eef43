"""Every NATS subject and JetStream stream name, in one place.

Events (past tense) travel on JetStream streams and survive restarts. Requests (imperative) are core-NATS
request/reply served by a queue group, so any replica answers.
"""

from __future__ import annotations

from dataclasses import dataclass

# The services, in the order they start (a service's dependencies first); each is one NATS user on the bus.
SERVICES = ("keys", "billing", "runner", "webhooks", "gateway")


def inbox_prefix(user: str | None) -> str:
    """The inbox prefix of an account (nats-py's `inbox_prefix` connect option): `_INBOX_<user>`, so its replies
    go where only it may subscribe. Without a user (an open server, deploy/compose.yaml) nats' default."""
    return f"_INBOX_{user}" if user else "_INBOX"


# --- events (JetStream) ---
RUN_REQUESTED = "run.requested"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
CHARGE_COLLECTED = "billing.charge.collected"
CHARGE_UNCOLLECTED = "billing.charge.uncollected"
BALANCE_LOW = "billing.balance.low"
DEPOSIT_SUCCEEDED = "billing.deposit.succeeded"
BUDGET_REACHED = "billing.budget.reached"
KEY_EXPIRING = "keys.key.expiring"

# --- ephemeral broadcasts (core NATS) ---
RUN_PROGRESS = "run.progress.{run_id}"
KEYS_REVOKED = "keys.revoked"
CATALOG_CHANGED = "catalog.changed"  # gateway → gateways: drop a cached endpoint config
SECRETS_CHANGED = "secrets.changed"  # keys → runners: drop a cached secret (ids only)

# --- JetStream key-value buckets ---
ASYNC_RUNS_BUCKET = "async_runs"  # run_id → endpoint and owner of an accepted async run, until it is recorded


def run_progress(run_id: str) -> str:
    return RUN_PROGRESS.format(run_id=run_id)


# --- requests (core NATS request/reply, queue groups) ---
KEYS_ISSUE = "keys.issue"
KEYS_VERIFY = "keys.verify"
KEYS_REVOKE = "keys.revoke"
KEYS_CREATE = "keys.create"
KEYS_LIST = "keys.list"
KEYS_UPDATE = "keys.update"
KEYS_USED = "keys.used"  # gateways → keys: batched last-used times
SECRETS_STORE = "secrets.store"
SECRETS_DELETE = "secrets.delete"
SECRETS_RESOLVE = "secrets.resolve"
WALLET_BALANCE = "wallet.balance"
WALLET_DEPOSIT = "wallet.deposit"
WALLET_TRANSACTIONS = "wallet.transactions"
WALLET_CHARGES = "wallet.charges"
WALLET_DEPOSITS = "wallet.deposits"
WALLET_AUTO_RECHARGE_GET = "wallet.auto_recharge.get"
WALLET_AUTO_RECHARGE_SET = "wallet.auto_recharge.set"
PAYMENTS_STRIPE_WEBHOOK = "payments.stripe.webhook"  # gateway → billing: a Stripe webhook, body untouched
SPEND_RESERVE = "spend.reserve"  # gateway → billing: hold a capped run's price before it starts
SPEND_RELEASE = "spend.release"
SPEND_TOTALS = "spend.totals"
WALLET_USAGE = "wallet.usage"
WALLET_ALERTS_GET = "wallet.alerts.get"
WALLET_ALERTS_SET = "wallet.alerts.set"
RUNS_LIST = "runs.list"
RUNS_GET = "runs.get"
TOOLS_LIST = "tools.list"  # a live tools/list of one MCP server, asked by the gateway, done by a runner
WEBHOOKS_CREATE = "webhooks.create"
WEBHOOKS_LIST = "webhooks.list"
WEBHOOKS_GET = "webhooks.get"
WEBHOOKS_UPDATE = "webhooks.update"
WEBHOOKS_DELETE = "webhooks.delete"
WEBHOOKS_TEST = "webhooks.test"
WEBHOOKS_DELIVERIES = "webhooks.deliveries"
WEBHOOKS_RETRY = "webhooks.retry"
WEBHOOKS_REQUESTS = [
    WEBHOOKS_CREATE, WEBHOOKS_LIST, WEBHOOKS_GET, WEBHOOKS_UPDATE, WEBHOOKS_DELETE, WEBHOOKS_TEST,
    WEBHOOKS_DELIVERIES, WEBHOOKS_RETRY,
]  # fmt: skip


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]
    work_queue: bool = False
    max_age_s: float = 7 * 24 * 3600
    duplicate_window_s: float = 120.0
    description: str = ""
    atomic_publish: bool = False  # allow JetStream atomic batches (one fsync per batch); nats-server >= 2.12.1


RUNS_STREAM = StreamSpec(
    name="RUNS",
    subjects=[RUN_REQUESTED],
    work_queue=True,
    description="Run requests, consumed once by any runner replica.",
)
RUN_EVENTS_STREAM = StreamSpec(
    name="RUN_EVENTS",
    subjects=[RUN_COMPLETED, RUN_FAILED],
    description="Terminal run outcomes; billing and anyone else may consume them.",
)
BILLING_EVENTS_STREAM = StreamSpec(
    name="BILLING_EVENTS",
    subjects=["billing.charge.>", "billing.balance.>", "billing.deposit.>", "billing.budget.>"],
    description="Charge outcomes, low-balance crossings, credited deposits and reached endpoint budgets, "
    "published by billing.",
    atomic_publish=True,  # billing stores a batch's outcomes at once
)
KEY_EVENTS_STREAM = StreamSpec(
    name="KEY_EVENTS",
    subjects=["keys.key.>"],
    description="Caller keys about to expire (a week before), published by the keys service.",
)
STREAMS = [RUNS_STREAM, RUN_EVENTS_STREAM, BILLING_EVENTS_STREAM, KEY_EVENTS_STREAM]

# durable consumer names
RUNNER_CONSUMER = "runner"
BILLING_CONSUMER = "billing"
WEBHOOKS_CONSUMER = "webhooks"  # one per stream (RUN_EVENTS, BILLING_EVENTS), same name
