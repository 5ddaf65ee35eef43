"""Owner webhooks: subscriptions, turning platform events into deliveries, the retry schedule, the delivery log."""

from __future__ import annotations

import base64
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter

from agentry_common.errors import Conflict, NotFound, ValidationFailed
from agentry_common.events import (
    BalanceLow,
    BudgetReached,
    ChargeCollected,
    ChargeUncollected,
    DepositSucceeded,
    KeyExpiring,
    RunCompleted,
    RunFailed,
    new_id,
    utcnow,
)
from agentry_common.netguard import check_url
from agentry_common.requests import (
    CreateWebhook,
    Delivery,
    DeliveryAttempt,
    DeliveryPage,
    UpdateWebhook,
    WebhookInfo,
)

from . import models
from .repository import WebhooksRepository
from .settings import Settings

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
TEST_EVENT = "webhook.test"
_RUN_EVENT: TypeAdapter[RunCompleted | RunFailed] = TypeAdapter(RunCompleted | RunFailed)
_CHARGE_EVENT: TypeAdapter[ChargeCollected | ChargeUncollected] = TypeAdapter(ChargeCollected | ChargeUncollected)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes (the HMAC key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


async def check_webhook_url(url: str, settings: Settings) -> None:
    """Invariant 5 at registration: 422 naming the field (the check runs again before every attempt)."""
    try:
        await check_url(url, allow_private=settings.allow_private_urls)
    except ValidationFailed as err:
        raise ValidationFailed(f"url: {err.message}", code=err.code) from None


# --- subscriptions ---


def public(webhook: models.Webhook) -> WebhookInfo:
    return WebhookInfo(
        id=webhook.id,
        url=webhook.url,
        events=webhook.events,  # stored from a validated list
        description=webhook.description,
        enabled=webhook.enabled,
        created_at=webhook.created_at,
    )


async def create(repo: WebhooksRepository, cmd: CreateWebhook, webhook_id: str, secret_id: str) -> WebhookInfo:
    webhook = models.Webhook(
        id=webhook_id,
        owner_id=cmd.owner_id,
        url=cmd.url,
        events=list(dict.fromkeys(cmd.events)),
        description=cmd.description,
        enabled=True,
        secret_id=secret_id,
    )
    await repo.add(webhook)
    return public(webhook)


async def find(repo: WebhooksRepository, owner_id: str, webhook_id: str, *, lock: bool = False) -> models.Webhook:
    webhook = await repo.webhook(owner_id, webhook_id, lock=lock)
    if webhook is None:
        raise NotFound("webhook not found", code="webhook_not_found")
    return webhook


async def find_enabled(repo: WebhooksRepository, owner_id: str, webhook_id: str) -> models.Webhook:
    """A webhook that may be sent to: a disabled one sends nothing, not even on request."""
    webhook = await find(repo, owner_id, webhook_id)
    if not webhook.enabled:
        raise Conflict("the webhook is disabled; enable it first", code="webhook_disabled")
    return webhook


async def update(repo: WebhooksRepository, cmd: UpdateWebhook) -> WebhookInfo:
    webhook = await find(repo, cmd.owner_id, cmd.webhook_id, lock=True)
    changes: dict[str, Any] = {name: getattr(cmd, name) for name in cmd.fields}
    for name in ("url", "events", "enabled"):
        if name in changes and changes[name] is None:
            raise ValidationFailed(f"{name}: may not be null", code="validation_error")
    if "events" in changes:
        changes["events"] = list(dict.fromkeys(changes["events"]))
    for name, value in changes.items():
        setattr(webhook, name, value)
    await repo.save(webhook)
    return public(webhook)


# --- events → deliveries ---


@dataclass(frozen=True)
class Notice:
    """One event as owners' webhooks receive it."""

    owner_id: str
    type: str
    key: str  # natural key of the source fact: a webhook gets one delivery per key
    occurred_at: datetime
    data: dict[str, Any]

    def body(self) -> str:
        """The JSON body, signed and sent unchanged on every attempt."""
        timestamp = self.occurred_at.isoformat().replace("+00:00", "Z")
        return orjson.dumps({"type": self.type, "timestamp": timestamp, "data": self.data}).decode()


def run_notice(raw: bytes) -> Notice:
    """`run.completed` → `run.succeeded`, `run.failed` → `run.failed` (timeouts included: `status` says which)."""
    event = _RUN_EVENT.validate_json(raw)
    data: dict[str, Any] = {
        "run_id": event.run_id,
        "endpoint_id": event.endpoint_id,
        # Runs carry their caller's key once the runner's events have it; null for public and test runs.
        "key_id": getattr(event, "key_id", None),
        "status": event.status,
        "usage": event.usage.model_dump(mode="json"),
        "is_test": event.is_test,
    }
    kind = "run.succeeded"
    if isinstance(event, RunFailed):
        kind = "run.failed"
        data["error"] = event.error.model_dump(mode="json")
    return Notice(event.owner_id, kind, f"{kind}:{event.run_id}", event.occurred_at, data)


def charge_notice(raw: bytes) -> Notice:
    event = _CHARGE_EVENT.validate_json(raw)
    kind = "charge.collected" if isinstance(event, ChargeCollected) else "charge.uncollected"
    data = {
        "run_id": event.run_id,
        "endpoint_id": event.endpoint_id,
        "amount_cents": event.amount_cents,
        "status": event.status,
        "charge_id": event.charge_id,
    }
    return Notice(event.owner_id, kind, f"{kind}:{event.charge_id}", event.occurred_at, data)


def balance_low_notice(raw: bytes) -> Notice:
    """`billing.balance.low` → `balance.low`, once per crossing (the key names the crossing)."""
    event = BalanceLow.model_validate_json(raw)
    data = {"balance_cents": event.balance_cents, "threshold_cents": event.threshold_cents}
    return Notice(event.owner_id, "balance.low", f"balance.low:{event.crossing}", event.occurred_at, data)


def deposit_notice(raw: bytes) -> Notice:
    """`billing.deposit.succeeded` → `deposit.succeeded`, once per deposit."""
    event = DepositSucceeded.model_validate_json(raw)
    data = {"deposit_id": event.deposit_id, "amount_cents": event.amount_cents}
    return Notice(event.owner_id, "deposit.succeeded", f"deposit.succeeded:{event.deposit_id}", event.occurred_at,
                  data)  # fmt: skip


def budget_notice(raw: bytes) -> Notice:
    """`billing.budget.reached` → `budget.reached`, once per endpoint, period and budget amount."""
    event = BudgetReached.model_validate_json(raw)
    data = {"endpoint_id": event.endpoint_id, "budget_cents": event.budget_cents, "budget_period": event.budget_period}
    key = f"budget.reached:{event.endpoint_id}:{event.period_start.isoformat()}:{event.budget_cents}"
    return Notice(event.owner_id, "budget.reached", key, event.occurred_at, data)


def key_expiring_notice(raw: bytes) -> Notice:
    """`keys.key.expiring` → `key.expiring`, once per key and expiry time (a changed expiry is a new notice)."""
    event = KeyExpiring.model_validate_json(raw)
    expires_at = event.expires_at.isoformat().replace("+00:00", "Z")
    data = {"endpoint_id": event.endpoint_id, "key_id": event.key_id, "expires_at": expires_at}
    return Notice(event.owner_id, "key.expiring", f"key.expiring:{event.key_id}:{expires_at}", event.occurred_at, data)


def _delivery_row(webhook_id: str, notice: Notice, give_up_at: datetime) -> dict[str, object]:
    now = utcnow()
    return {
        "id": new_id("whd"),
        "webhook_id": webhook_id,
        "owner_id": notice.owner_id,
        "event_id": notice.key,
        "event_type": notice.type,
        "body": notice.body(),
        "status": "pending",
        "next_attempt_at": now,
        "give_up_at": give_up_at,
        "created_at": now,
    }


async def fan_out(repo: WebhooksRepository, notice: Notice, settings: Settings) -> list[str]:
    """One delivery per subscribed webhook; a redelivered event finds its deliveries there and adds none."""
    webhooks = await repo.subscribed(notice.owner_id, notice.type)
    give_up_at = utcnow() + timedelta(seconds=settings.webhook_retry_window_s)
    return await repo.enqueue([_delivery_row(w.id, notice, give_up_at) for w in webhooks])


async def send_test(repo: WebhooksRepository, owner_id: str, webhook_id: str, settings: Settings) -> Delivery:
    webhook = await find_enabled(repo, owner_id, webhook_id)
    test_id = new_id("evt")
    notice = Notice(owner_id, TEST_EVENT, f"{TEST_EVENT}:{test_id}", utcnow(), {"webhook_id": webhook.id})
    (delivery_id,) = await repo.enqueue(
        [_delivery_row(webhook.id, notice, utcnow() + timedelta(seconds=settings.webhook_retry_window_s))]
    )
    return await delivery(repo, owner_id, webhook_id, delivery_id)


# --- the delivery log ---


def _public_delivery(d: models.Delivery, attempts: list[models.DeliveryAttempt]) -> Delivery:
    return Delivery(
        id=d.id,
        webhook_id=d.webhook_id,
        event_type=d.event_type,
        status=d.status,
        attempts=[
            DeliveryAttempt(at=a.at, response_status=a.response_status, latency_ms=a.latency_ms, error=a.error)
            for a in attempts
        ],
        next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
        created_at=d.created_at,
    )


async def delivery(repo: WebhooksRepository, owner_id: str, webhook_id: str, delivery_id: str) -> Delivery:
    await find(repo, owner_id, webhook_id)
    found = await repo.delivery(webhook_id, delivery_id)
    if found is None:
        raise NotFound("delivery not found", code="delivery_not_found")
    return _public_delivery(found, (await repo.attempts([found.id]))[found.id])


def _cursor(d: models.Delivery) -> str:
    return f"{d.created_at.isoformat()}|{d.id}"


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, _, last_id = cursor.partition("|")
        return datetime.fromisoformat(at), last_id
    except ValueError:
        raise ValidationFailed("cursor: not a cursor this API returned", code="invalid_cursor") from None


async def deliveries(
    repo: WebhooksRepository, owner_id: str, webhook_id: str, limit: int, cursor: str | None
) -> DeliveryPage:
    await find(repo, owner_id, webhook_id)
    rows = await repo.deliveries(webhook_id, limit + 1, _parse_cursor(cursor) if cursor else None)
    page, more = rows[:limit], len(rows) > limit
    attempts = await repo.attempts([d.id for d in page])
    return DeliveryPage(
        deliveries=[_public_delivery(d, attempts[d.id]) for d in page],
        next_cursor=_cursor(page[-1]) if more else None,
    )


async def retry(repo: WebhooksRepository, owner_id: str, webhook_id: str, delivery_id: str, settings: Settings) -> None:
    """Send the delivery again now (same `webhook-id`), with a fresh retry window."""
    await find_enabled(repo, owner_id, webhook_id)
    found = await repo.delivery(webhook_id, delivery_id, lock=True)
    if found is None:
        raise NotFound("delivery not found", code="delivery_not_found")
    now = utcnow()
    await repo.requeue(found, now + timedelta(seconds=settings.webhook_retry_window_s), now)


# --- the retry schedule ---


def next_attempt(attempts_made: int, give_up_at: datetime, settings: Settings) -> datetime | None:
    """When to try again after `attempts_made` failed attempts: exponential backoff with jitter (so receivers
    coming back are not hit by every retry at once), or None once the retry window is over."""
    wait = min(settings.webhook_retry_base_s * 2 ** (attempts_made - 1), settings.webhook_retry_max_s)
    at = utcnow() + timedelta(seconds=wait * random.uniform(0.8, 1.2))
    return at if at <= give_up_at else None
