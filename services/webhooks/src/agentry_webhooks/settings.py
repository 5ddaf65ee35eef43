from __future__ import annotations

from pydantic import Field, model_validator

from agentry_common import subjects
from agentry_common.settings import ServiceSettings


class Settings(ServiceSettings):
    allow_private_urls: bool = Field(
        False, description="Let webhook URLs reach private and loopback addresses (never link-local)."
    )
    event_consumer: str = Field(
        subjects.WEBHOOKS_CONSUMER,
        description="Durable JetStream consumers (one on RUN_EVENTS, one on BILLING_EVENTS) shared by replicas.",
    )
    event_retry_delay_s: float = Field(2.0, ge=0, description="Delay before an event that failed is delivered again.")
    webhook_timeout_s: float = Field(5.0, gt=0, description="A receiver that has not answered by then has failed.")
    webhook_retry_window_s: float = Field(
        86400.0, gt=0, description="How long a delivery is retried after its event (or a manual retry)."
    )
    webhook_retry_base_s: float = Field(
        10.0, gt=0, description="Wait before the first retry; it doubles after each failed attempt."
    )
    webhook_retry_max_s: float = Field(7200.0, gt=0, description="Longest wait between two attempts.")
    webhook_lease_s: float = Field(
        60.0, gt=0, description="A replica owns a delivery it took this long; after that (it crashed) another may."
    )
    webhook_poll_s: float = Field(1.0, gt=0, description="How often due deliveries are looked for.")
    backlog_sample_s: float = Field(15.0, gt=0, description="How often the due deliveries are counted (metric).")
    webhook_retention_s: float = Field(
        30 * 86400.0,
        ge=max(spec.max_age_s for spec in subjects.STREAMS),
        description="Finished deliveries (succeeded or failed) and their attempts are deleted this long after "
        "their event was queued. At least the event streams' age (7 days): an event redelivered must still find "
        "its delivery, or it would be sent again.",
    )
    webhook_purge_s: float = Field(600.0, gt=0, description="How often finished deliveries past retention go.")
    webhook_concurrency: int = Field(32, ge=1, description="Deliveries sent at once per replica.")
    secret_cache_ttl_s: float = Field(
        300.0, ge=0, description="How long a decrypted signing secret is kept in memory (0: resolved every time)."
    )
    secret_cache_size: int = Field(10_000, ge=1, description="Most decrypted signing secrets kept in memory.")
    rpc_workers: int = Field(8, ge=1, description="Management requests handled concurrently per replica.")

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> Settings:
        # A lease that ran out while its attempt was still sending would let a second replica send it too.
        if self.webhook_lease_s <= self.webhook_timeout_s + self.rpc_timeout_s:
            raise ValueError("WEBHOOK_LEASE_S must exceed WEBHOOK_TIMEOUT_S + RPC_TIMEOUT_S")
        return self


settings = Settings()
