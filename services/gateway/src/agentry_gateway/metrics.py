"""Prometheus metrics of the gateway (served on `/metrics` by the shared app); rate-limit metrics live with the
limiter in `ratelimit`."""

from __future__ import annotations

from prometheus_client import Counter

KEY_VERIFICATIONS = Counter(
    "agentry_gateway_key_verifications_total",
    "API-key checks of run requests, by where the verdict came from (cache, keys_service, format) and what it was",
    ["source", "outcome"],
)
ENDPOINT_LOOKUPS = Counter(
    "agentry_gateway_endpoint_lookups_total", "Endpoint configs looked up by slug, by cache result", ["cache"]
)
