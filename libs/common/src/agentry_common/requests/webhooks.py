"""Requests the webhooks service answers: owners' subscriptions and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from ..events import Contract

WebhookEventType = Literal[
    "run.succeeded",
    "run.failed",
    "charge.collected",
    "charge.uncollected",
    "balance.low",
    "budget.reached",
    "key.expiring",
    "deposit.succeeded",
]
DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookInfo(Contract):
    """An owner's webhook subscription, as shown to the owner. Never carries the signing secret."""

    id: str = Field(description="`wh_…`")
    url: str = Field(description="Where events are POSTed (http or https).")
    events: list[WebhookEventType] = Field(description="The event types this webhook receives.")
    description: str | None = Field(None, description="The owner's note.")
    enabled: bool = Field(description="A disabled webhook receives no new deliveries and stops retrying.")
    created_at: datetime


class CreateWebhook(Contract):
    owner_id: str
    url: str
    events: list[WebhookEventType]
    description: str | None = None


class CreatedWebhook(Contract):
    webhook: WebhookInfo
    secret: str = Field(description="The signing secret `whsec_…`: returned once, here, never again.")


class ListWebhooks(Contract):
    owner_id: str


class WebhookList(Contract):
    webhooks: list[WebhookInfo]


class WebhookRef(Contract):
    owner_id: str = Field(description="The webhook must belong to this owner (else 404).")
    webhook_id: str


class UpdateWebhook(WebhookRef):
    url: str | None = None
    events: list[WebhookEventType] | None = None
    description: str | None = None
    enabled: bool | None = None
    fields: list[str] = Field(default_factory=list, description="The fields the caller set (PATCH is partial).")


class WebhookOut(Contract):
    webhook: WebhookInfo


class DeliveryAttempt(Contract):
    at: datetime = Field(description="When the attempt started.")
    response_status: int | None = Field(None, description="The receiver's HTTP status; null when it did not answer.")
    latency_ms: int = Field(description="From sending to the answer (or to giving up).")
    error: str | None = Field(None, description="Why the attempt failed, when it did (`timeout`, `http_500`, …).")


class Delivery(Contract):
    id: str = Field(description="`whd_…`, also the `webhook-id` header: the same on every attempt.")
    webhook_id: str
    event_type: str = Field(description="One of the webhook's event types, or `webhook.test`.")
    status: DeliveryStatus
    attempts: list[DeliveryAttempt] = Field(description="Every attempt, oldest first.")
    next_attempt_at: datetime | None = Field(None, description="When the next attempt is due (pending only).")
    created_at: datetime


class ListDeliveries(WebhookRef):
    limit: int = 20
    cursor: str | None = None


class DeliveryPage(Contract):
    deliveries: list[Delivery] = Field(description="Newest first.")
    next_cursor: str | None = None


class DeliveryRef(WebhookRef):
    delivery_id: str


class DeliveryOut(Contract):
    delivery: Delivery
