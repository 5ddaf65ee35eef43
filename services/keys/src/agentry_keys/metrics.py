"""Prometheus metrics of the keys service (served on `/metrics` by the shared app)."""

from __future__ import annotations

from prometheus_client import Counter

VERIFICATIONS = Counter("agentry_keys_verifications_total", "API keys verified, by verdict", ["outcome"])
SECRETS_RESOLVED = Counter("agentry_keys_secrets_resolved_total", "Secrets resolved for runs, by outcome", ["outcome"])
