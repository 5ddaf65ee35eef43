"""Owner webhooks API — answered by the webhooks service. Another owner's webhook or delivery answers 404."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, StringConstraints

from agentry_common import rpc, subjects
from agentry_common.app import ERROR_RESPONSES
from agentry_common.errors import ErrorBody
from agentry_common.requests import (
    CreatedWebhook,
    CreateWebhook,
    DeliveryOut,
    DeliveryPage,
    DeliveryRef,
    Done,
    ListDeliveries,
    ListWebhooks,
    UpdateWebhook,
    WebhookEventType,
    WebhookList,
    WebhookOut,
    WebhookRef,
)

from ..schemas import Strict, Url
from .deps import CurrentUser, GatewayDep

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)
DISABLED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "`webhook_disabled`: the webhook is disabled; enable it first"}
}

Description = Annotated[str, StringConstraints(max_length=500)]
Events = Annotated[
    list[WebhookEventType],
    Field(min_length=1, max_length=8, description="Event types to receive (at least one)."),
]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class WebhookCreate(Strict):
    url: Url = Field(description="http(s) URL that receives the events; private addresses only where allowed.")
    events: Events
    description: Description | None = None


class WebhookUpdate(Strict):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = None


async def _ask(gw: GatewayDep, subject: str, request: BaseModel, reply: type[Any]) -> Any:
    return await rpc.call(
        gw.nc, subject, request, reply, timeout=gw.settings.rpc_timeout_s, unavailable="webhooks are unavailable"
    )


@router.post("", status_code=201)
async def create_webhook(body: WebhookCreate, user: CurrentUser, gw: GatewayDep) -> CreatedWebhook:
    """Subscribe a URL to event types. The signing secret (`whsec_…`) is in this answer only: keep it."""
    cmd = CreateWebhook(owner_id=user.id, url=body.url, events=body.events, description=body.description)
    result: CreatedWebhook = await _ask(gw, subjects.WEBHOOKS_CREATE, cmd, CreatedWebhook)
    return result


@router.get("")
async def list_webhooks(user: CurrentUser, gw: GatewayDep) -> WebhookList:
    result: WebhookList = await _ask(gw, subjects.WEBHOOKS_LIST, ListWebhooks(owner_id=user.id), WebhookList)
    return result


@router.get("/{webhook_id}")
async def get_webhook(webhook_id: Id, user: CurrentUser, gw: GatewayDep) -> WebhookOut:
    cmd = WebhookRef(owner_id=user.id, webhook_id=webhook_id)
    result: WebhookOut = await _ask(gw, subjects.WEBHOOKS_GET, cmd, WebhookOut)
    return result


@router.patch("/{webhook_id}")
async def update_webhook(webhook_id: Id, body: WebhookUpdate, user: CurrentUser, gw: GatewayDep) -> WebhookOut:
    """Partial: only the fields sent change. `enabled: false` stops deliveries, retries included."""
    cmd = UpdateWebhook(
        owner_id=user.id, webhook_id=webhook_id, fields=sorted(body.model_fields_set), **body.model_dump()
    )
    result: WebhookOut = await _ask(gw, subjects.WEBHOOKS_UPDATE, cmd, WebhookOut)
    return result


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: Id, user: CurrentUser, gw: GatewayDep) -> Response:
    """The webhook, its secret and its delivery log go; pending retries stop."""
    await _ask(gw, subjects.WEBHOOKS_DELETE, WebhookRef(owner_id=user.id, webhook_id=webhook_id), Done)
    return Response(status_code=204)


@router.post("/{webhook_id}/test", status_code=202, responses=DISABLED)
async def test_webhook(webhook_id: Id, user: CurrentUser, gw: GatewayDep) -> DeliveryOut:
    """Queue a signed `webhook.test` event to the webhook now; follow it in the delivery log."""
    cmd = WebhookRef(owner_id=user.id, webhook_id=webhook_id)
    result: DeliveryOut = await _ask(gw, subjects.WEBHOOKS_TEST, cmd, DeliveryOut)
    return result


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: Id,
    user: CurrentUser,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeliveryPage:
    """Deliveries newest first, each with every attempt (time, response status, latency, error)."""
    cmd = ListDeliveries(owner_id=user.id, webhook_id=webhook_id, limit=limit, cursor=cursor)
    result: DeliveryPage = await _ask(gw, subjects.WEBHOOKS_DELIVERIES, cmd, DeliveryPage)
    return result


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", status_code=202, responses=DISABLED)
async def retry_delivery(webhook_id: Id, delivery_id: Id, user: CurrentUser, gw: GatewayDep) -> DeliveryOut:
    """Send a delivery again now, with the same `webhook-id`, and retry it for another 24 hours if it fails."""
    cmd = DeliveryRef(owner_id=user.id, webhook_id=webhook_id, delivery_id=delivery_id)
    result: DeliveryOut = await _ask(gw, subjects.WEBHOOKS_RETRY, cmd, DeliveryOut)
    return result
