from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from agentry_common import subjects
from agentry_common.settings import ServiceSettings


class Settings(ServiceSettings):
    charge_consumer: str = Field(
        subjects.BILLING_CONSUMER, description="Durable JetStream consumer of `run.completed` shared by replicas."
    )
    charge_batch_size: int = Field(
        500, ge=1, le=5000, description="Most `run.completed` events charged in one database transaction."
    )
    charge_fetch_wait_s: float = Field(
        0.5, gt=0, description="How often billing takes the events that arrived (at once while a backlog remains)."
    )
    charge_inflight_batches: int = Field(
        4, ge=1, description="Committed batches whose outcome events may still be publishing while the next is charged."
    )
    charge_ack_wait_s: float = Field(
        60.0, gt=0, description="Unacknowledged events are redelivered after this long (to any replica)."
    )
    charge_retry_delay_s: float = Field(
        2.0, ge=0, description="Delay before an event that could not be charged is delivered again."
    )
    consumer_lag_sample_s: float = Field(5.0, gt=0, description="How often the consumer's backlog is sampled.")
    spend_hold_max_s: float = Field(
        900.0,
        gt=0,
        description="A hold whose run never ended (a gateway crashed) is released after this long; "
        "longer than the longest run timeout.",
    )
    rpc_workers: int = Field(8, ge=1, description="Wallet requests handled concurrently per replica.")
    payment_mode: Literal["manual", "stripe"] = Field(
        "manual",
        description="`manual`: a deposit credits the wallet at once (development); `stripe`: a deposit is a "
        "Stripe Checkout payment, credited by Stripe's signed webhook.",
    )
    stripe_secret_key: SecretStr | None = Field(None, description="Stripe secret API key (`sk_test_…` / `sk_live_…`).")
    stripe_webhook_secret: SecretStr | None = Field(
        None, description="Signing secret of the Stripe webhook endpoint (`whsec_…`)."
    )
    stripe_api_base: str | None = Field(None, description="Stripe API base URL override (tests: a fake on loopback).")
    stripe_timeout_s: float = Field(20.0, gt=0, description="Longest wait for one Stripe API call.")
    public_url: str = Field(
        "http://localhost:8080", description="Where owners reach Agentry: Checkout returns them to its console."
    )

    @model_validator(mode="after")
    def _stripe_needs_keys(self) -> Settings:
        # Without both keys a Stripe deposit could not be started, or never be credited: refuse to start at all
        # (in every environment; development runs `manual`, which needs no account).
        if self.payment_mode == "stripe" and not (self.stripe_secret_key and self.stripe_webhook_secret):
            raise ValueError("PAYMENT_MODE=stripe needs STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET")
        return self


settings = Settings()
