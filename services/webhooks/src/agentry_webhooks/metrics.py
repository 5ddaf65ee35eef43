"""Prometheus metrics of the webhooks service (served on `/metrics` by the shared app)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ATTEMPTS = Counter("agentry_webhook_attempts_total", "Delivery attempts by outcome.", ["outcome"])
GAVE_UP = Counter("agentry_webhook_deliveries_given_up_total", "Deliveries that failed for the whole retry window.")
QUEUED = Counter("agentry_webhook_deliveries_queued_total", "Deliveries queued, by event type.", ["event_type"])
DUE = Gauge(
    "agentry_webhook_deliveries_due",
    "Deliveries whose attempt is due and not yet taken (the queue's backlog), sampled by each replica.",
)
