"""Prometheus metrics of the billing service (served on `/metrics` by the shared app)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHARGES = Counter("agentry_billing_charges_total", "Run charges recorded, by outcome", ["outcome"])
CHARGED_CENTS = Counter("agentry_billing_charged_cents_total", "Cents of run charges recorded, by outcome", ["outcome"])
DUPLICATES = Counter(
    "agentry_billing_charge_duplicates_total", "run.completed events for runs already charged (ignored)"
)
SKIPPED = Counter(
    "agentry_billing_events_skipped_total", "run.completed events that carry no charge, by reason", ["reason"]
)
SETTLED = Counter("agentry_billing_settlements_total", "Uncollected charges settled by a later credit")
SETTLED_CENTS = Counter("agentry_billing_settled_cents_total", "Cents of uncollected charges settled")
CREDITS = Counter("agentry_billing_credits_total", "Wallet credits, by kind", ["kind"])
CREDITED_CENTS = Counter("agentry_billing_credited_cents_total", "Cents credited to wallets, by kind", ["kind"])
CREDIT_REPLAYS = Counter("agentry_billing_credit_replays_total", "Credit requests answered from an earlier one")
BATCH_SECONDS = Histogram(
    "agentry_billing_charge_batch_seconds",
    "Time to charge one batch, from its arrival to its commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_EVENTS = Histogram(
    "agentry_billing_charge_batch_events",
    "run.completed events per batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_FAILURES = Counter(
    "agentry_billing_charge_batch_failures_total", "Batches that failed to commit, by stage", ["stage"]
)
CONSUMER_PENDING = Gauge(
    "agentry_billing_consumer_pending", "run.completed events not yet delivered to billing (consumer lag)"
)
CONSUMER_ACK_PENDING = Gauge(
    "agentry_billing_consumer_ack_pending", "run.completed events delivered but not yet acknowledged"
)
CONSUMER_REDELIVERED = Gauge("agentry_billing_consumer_redelivered", "run.completed events currently being redelivered")
