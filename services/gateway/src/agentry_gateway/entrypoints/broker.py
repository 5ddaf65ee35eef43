"""NATS entrypoints of the gateway. It answers nothing on the bus (it asks: keys, runs, wallets, webhooks); what
it hears are broadcasts every replica acts on, so no queue group: an endpoint's key changed (drop the cached
verdicts) and an endpoint or a workspace changed (drop the cached configs). A run's progress is awaited by the
dispatcher on a subscription of that run's own."""

from __future__ import annotations

from faststream.nats import NatsRouter

from agentry_common import asyncapi, subjects
from agentry_common.events import CatalogChanged, KeysRevoked

from .container import GatewayContext

router = NatsRouter()

# Documented here with their descriptions; the subscribers below are left out of the generated document so
# that each subject appears once (`include_in_schema=False`, as the webhooks service does).
asyncapi.consumes(
    subjects.KEYS_REVOKED, KeysRevoked, by="gateway",
    description="Every gateway replica drops its cached verdicts for the endpoint at once.",
)  # fmt: skip
asyncapi.consumes(
    subjects.CATALOG_CHANGED, CatalogChanged, by="gateway",
    description="Every gateway replica drops its cached configs of the endpoint (or the workspace) at once.",
)  # fmt: skip


@router.subscriber(subjects.KEYS_REVOKED, include_in_schema=False)
async def keys_revoked(event: KeysRevoked, gw: GatewayContext) -> None:
    gw.keys.revoked(event.endpoint_id)


@router.subscriber(subjects.CATALOG_CHANGED, include_in_schema=False)
async def catalog_changed(event: CatalogChanged, gw: GatewayContext) -> None:
    gw.cache.forget(event.endpoint_id, event.workspace_id)
