"""NATS entrypoints of the webhooks service: the gateway's requests (queue group `webhooks`) and the platform
events it turns into deliveries (durable JetStream consumers shared by every replica)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from faststream.middlewares import AckPolicy
from faststream.nats import NatsRouter, PullSub
from faststream.nats.annotations import NatsBroker, NatsMessage
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from agentry_common import asyncapi, rpc, subjects
from agentry_common.broker import jstream, pull_inbox
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
)
from agentry_common.requests import (
    CreatedWebhook,
    CreateWebhook,
    DeleteSecret,
    DeliveryOut,
    DeliveryPage,
    DeliveryRef,
    Done,
    ListDeliveries,
    ListWebhooks,
    StoredSecret,
    StoreSecret,
    UpdateWebhook,
    WebhookList,
    WebhookOut,
    WebhookRef,
)
from agentry_common.rpc import serve
from agentry_common.subjects import StreamSpec

from .. import metrics, service
from ..settings import settings
from .container import Webhooks, WebhooksDep

log = logging.getLogger(__name__)

QUEUE = "webhooks"
router = NatsRouter()


async def _keys(broker: NatsBroker, subject: str, request: StoreSecret | DeleteSecret, reply: type) -> object:
    return await rpc.call(
        broker.connection, subject, request, reply,
        timeout=settings.rpc_timeout_s, unavailable="the keys service is unavailable",
    )  # fmt: skip


@router.subscriber(subjects.WEBHOOKS_CREATE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def create_webhook(cmd: CreateWebhook, broker: NatsBroker, webhooks: WebhooksDep) -> CreatedWebhook:
    await service.check_webhook_url(cmd.url, settings)
    secret = service.new_secret()
    # Encrypted by the keys service under the owner: a dump of this schema holds only the secret's id.
    stored = await _keys(broker, subjects.SECRETS_STORE, StoreSecret(owner_id=cmd.owner_id, value=secret), StoredSecret)
    assert isinstance(stored, StoredSecret)
    try:
        async with webhooks.unit_of_work() as repo:
            webhook = await service.create(repo, cmd, new_id("wh"), stored.secret_id)
    except BaseException:
        with contextlib.suppress(Exception):  # not kept: neither is its secret
            await _keys(broker, subjects.SECRETS_DELETE, DeleteSecret(secret_id=stored.secret_id), Done)
        raise
    return CreatedWebhook(webhook=webhook, secret=secret)


@router.subscriber(subjects.WEBHOOKS_LIST, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def list_webhooks(cmd: ListWebhooks, webhooks: WebhooksDep) -> WebhookList:
    async with webhooks.unit_of_work() as repo:
        return WebhookList(webhooks=[service.public(w) for w in await repo.webhooks(cmd.owner_id)])


@router.subscriber(subjects.WEBHOOKS_GET, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def get_webhook(cmd: WebhookRef, webhooks: WebhooksDep) -> WebhookOut:
    async with webhooks.unit_of_work() as repo:
        return WebhookOut(webhook=service.public(await service.find(repo, cmd.owner_id, cmd.webhook_id)))


@router.subscriber(subjects.WEBHOOKS_UPDATE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def update_webhook(cmd: UpdateWebhook, webhooks: WebhooksDep) -> WebhookOut:
    if "url" in cmd.fields and cmd.url is not None:
        await service.check_webhook_url(cmd.url, settings)
    async with webhooks.unit_of_work() as repo:
        return WebhookOut(webhook=await service.update(repo, cmd))


@router.subscriber(subjects.WEBHOOKS_DELETE, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def delete_webhook(cmd: WebhookRef, broker: NatsBroker, webhooks: WebhooksDep) -> Done:
    async with webhooks.unit_of_work() as repo:
        webhook = await service.find(repo, cmd.owner_id, cmd.webhook_id, lock=True)
        secret_id = webhook.secret_id
        await repo.delete(webhook)
    if webhooks.scheduler.secrets is not None:
        webhooks.scheduler.secrets.forget([secret_id])  # this replica at once; the others on secrets.changed
    with contextlib.suppress(Exception):  # the webhook is gone; an orphaned ciphertext is harmless
        await _keys(broker, subjects.SECRETS_DELETE, DeleteSecret(secret_id=secret_id), Done)
    return Done()


@router.subscriber(subjects.WEBHOOKS_TEST, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def test_webhook(cmd: WebhookRef, webhooks: WebhooksDep) -> DeliveryOut:
    async with webhooks.unit_of_work() as repo:
        delivery = await service.send_test(repo, cmd.owner_id, cmd.webhook_id, settings)
    metrics.QUEUED.labels(service.TEST_EVENT).inc()
    webhooks.scheduler.wake()
    return DeliveryOut(delivery=delivery)


@router.subscriber(subjects.WEBHOOKS_DELIVERIES, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def list_deliveries(cmd: ListDeliveries, webhooks: WebhooksDep) -> DeliveryPage:
    async with webhooks.unit_of_work() as repo:
        return await service.deliveries(repo, cmd.owner_id, cmd.webhook_id, cmd.limit, cmd.cursor)


@router.subscriber(subjects.WEBHOOKS_RETRY, queue=QUEUE, max_workers=settings.rpc_workers)
@serve
async def retry_delivery(cmd: DeliveryRef, webhooks: WebhooksDep) -> DeliveryOut:
    async with webhooks.unit_of_work() as repo:
        await service.retry(repo, cmd.owner_id, cmd.webhook_id, cmd.delivery_id, settings)
    webhooks.scheduler.wake()
    async with webhooks.unit_of_work() as repo:
        return DeliveryOut(delivery=await service.delivery(repo, cmd.owner_id, cmd.webhook_id, cmd.delivery_id))


# --- platform events → deliveries ---


async def _fan_out(webhooks: Webhooks, msg: NatsMessage, to_notice: Callable[[bytes], service.Notice]) -> None:
    """Queue the event's deliveries, then acknowledge it. Should that fail, the event comes back after a delay
    and finds the deliveries it did queue already there (unique per webhook and event)."""
    try:
        notice = to_notice(msg.body)
    except ValidationError as err:
        log.error("unreadable event dropped", extra={"subject": msg.raw_message.subject, "reason": str(err)[:300]})
        await msg.reject()
        return
    try:
        async with webhooks.unit_of_work() as repo:
            queued = await service.fan_out(repo, notice, settings)
    except Exception as err:
        log.warning("event not fanned out (%s); redelivering it later", type(err).__name__)
        await msg.nack(delay=settings.event_retry_delay_s)
        return
    await msg.ack()
    if queued:
        metrics.QUEUED.labels(notice.type).inc(len(queued))
        webhooks.scheduler.wake()


# Wallet and key events have durables of their own: a durable keeps the filter it was created with (nats-py does not
# update it), so widening the charge consumer's filter would not reach deployments that already have it.
# One durable per filter: two subscribers sharing a durable on one stream would overwrite each other's filter.
_WALLET_DURABLES = {
    subjects.BALANCE_LOW: f"{settings.event_consumer}-balance-low",
    subjects.DEPOSIT_SUCCEEDED: f"{settings.event_consumer}-deposit-succeeded",
    subjects.BUDGET_REACHED: f"{settings.event_consumer}-budget-reached",
    subjects.KEY_EXPIRING: f"{settings.event_consumer}-key-expiring",
}


def _durable(subject: str) -> str:
    return _WALLET_DURABLES.get(subject, settings.event_consumer)


for subject, event, stream, becomes in (
    (subjects.RUN_COMPLETED, RunCompleted, subjects.RUN_EVENTS_STREAM, "`run.succeeded`"),
    (subjects.RUN_FAILED, RunFailed, subjects.RUN_EVENTS_STREAM, "`run.failed`"),
    (subjects.CHARGE_COLLECTED, ChargeCollected, subjects.BILLING_EVENTS_STREAM, "`charge.collected`"),
    (subjects.CHARGE_UNCOLLECTED, ChargeUncollected, subjects.BILLING_EVENTS_STREAM, "`charge.uncollected`"),
    (subjects.BALANCE_LOW, BalanceLow, subjects.BILLING_EVENTS_STREAM, "`balance.low`"),
    (subjects.DEPOSIT_SUCCEEDED, DepositSucceeded, subjects.BILLING_EVENTS_STREAM, "`deposit.succeeded`"),
    (subjects.BUDGET_REACHED, BudgetReached, subjects.BILLING_EVENTS_STREAM, "`budget.reached`"),
    (subjects.KEY_EXPIRING, KeyExpiring, subjects.KEY_EVENTS_STREAM, "`key.expiring`"),
):
    asyncapi.consumes(
        subject, event, by="webhooks", stream=stream, durable=_durable(subject),
        description=f"Becomes a {becomes} delivery to each of its owner's webhooks subscribed to it "
        "(one per webhook and event, whatever the redeliveries).",
    )  # fmt: skip


def _events(
    filter_subject: str, stream: StreamSpec, durable: str, deliver: DeliverPolicy = DeliverPolicy.NEW
) -> Callable[[Callable[[NatsMessage, Webhooks], Awaitable[None]]], object]:
    """A durable pull subscriber on one filter. A new deployment notifies from now on (DeliverPolicy.NEW); the
    durable consumer remembers its place after. Documented above with its payloads (include_in_schema=False:
    the handlers read the raw message)."""
    return router.subscriber(
        filter_subject, stream=jstream(stream), durable=durable, deliver_policy=deliver,
        pull_sub=PullSub(batch_size=32, timeout=5.0), inbox_prefix=pull_inbox(settings),
        ack_policy=AckPolicy.MANUAL, include_in_schema=False,
    )  # fmt: skip


@_events("run.*", subjects.RUN_EVENTS_STREAM, settings.event_consumer)
async def on_run_event(msg: NatsMessage, webhooks: WebhooksDep) -> None:
    await _fan_out(webhooks, msg, service.run_notice)


@_events("billing.charge.*", subjects.BILLING_EVENTS_STREAM, settings.event_consumer)
async def on_charge_event(msg: NatsMessage, webhooks: WebhooksDep) -> None:
    await _fan_out(webhooks, msg, service.charge_notice)


@_events(subjects.BALANCE_LOW, subjects.BILLING_EVENTS_STREAM, _durable(subjects.BALANCE_LOW))
async def on_balance_low(msg: NatsMessage, webhooks: WebhooksDep) -> None:
    await _fan_out(webhooks, msg, service.balance_low_notice)


@_events(subjects.DEPOSIT_SUCCEEDED, subjects.BILLING_EVENTS_STREAM, _durable(subjects.DEPOSIT_SUCCEEDED))
async def on_deposit_succeeded(msg: NatsMessage, webhooks: WebhooksDep) -> None:
    await _fan_out(webhooks, msg, service.deposit_notice)


@_events(subjects.BUDGET_REACHED, subjects.BILLING_EVENTS_STREAM, _durable(subjects.BUDGET_REACHED))
async def on_budget_reached(msg: NatsMessage, webhooks: WebhooksDep) -> None:
    await _fan_out(webhooks, msg, service.budget_notice)


# KEY_EVENTS came with this consumer, so nothing in it is older than the feature: all of it is delivered (the
# keys service may have announced a key before this service first started).
@_events(subjects.KEY_EXPIRING, subjects.KEY_EVENTS_STREAM, _durable(subjects.KEY_EXPIRING), DeliverPolicy.ALL)
async def on_key_expiring(msg: NatsMessage, webhooks: WebhooksDep) -> None:
    await _fan_out(webhooks, msg, service.key_expiring_notice)
