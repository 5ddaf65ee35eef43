"""The owner's methods for caller keys, MCP tool listings, webhooks, payments, alerts and usage, shared by
`Client` and `AsyncClient` as mixins (so client.py stays readable); each is one `_ops` operation."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from . import _ops as ops
from . import models as m
from ._ops import Call

T = TypeVar("T")
When = str | datetime | None


def _query(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class OwnerMethods:
    def _do(self, call: Call[T]) -> T:
        raise NotImplementedError  # Client's

    def list_server_tools(self, workspace_id: str, server_id: str) -> list[m.ToolInfo]:
        return self._do(ops.list_server_tools(workspace_id, server_id))

    # caller keys
    def create_key(self, endpoint_id: str, name: str, **fields: Any) -> m.KeyCreated:
        """`fields`: expires_at, rate_limit_per_minute, spend_cap_cents, spend_cap_period."""
        return self._do(ops.create_key(endpoint_id, name, **fields))

    def list_keys(self, endpoint_id: str) -> list[m.Key]:
        return self._do(ops.list_keys(endpoint_id))

    def get_key(self, endpoint_id: str, key_id: str) -> m.Key:
        return self._do(ops.get_key(endpoint_id, key_id))

    def update_key(self, endpoint_id: str, key_id: str, **fields: Any) -> m.Key:
        return self._do(ops.update_key(endpoint_id, key_id, **fields))

    def revoke_key(self, endpoint_id: str, key_id: str) -> None:
        return self._do(ops.revoke_key(endpoint_id, key_id))

    # payments and alerts
    def deposits(self) -> list[m.DepositRecord]:
        return self._do(ops.deposits())

    def auto_recharge(self) -> m.AutoRecharge:
        return self._do(ops.auto_recharge())

    def set_auto_recharge(self, enabled: bool, threshold_cents: int, amount_cents: int) -> m.AutoRecharge:
        return self._do(ops.set_auto_recharge(enabled, threshold_cents, amount_cents))

    def balance_alerts(self) -> m.BalanceAlerts:
        return self._do(ops.balance_alerts())

    def set_balance_alerts(self, low_balance_cents: int | None) -> m.BalanceAlerts:
        return self._do(ops.set_balance_alerts(low_balance_cents))

    # usage
    def usage(
        self, *, since: When = None, until: When = None, granularity: str | None = None,
        group_by: str | None = None, endpoint_id: str | None = None, key_id: str | None = None,
    ) -> m.UsageReport:  # fmt: skip
        q = _query(since=since, until=until, granularity=granularity, group_by=group_by, endpoint_id=endpoint_id,
                   key_id=key_id)  # fmt: skip
        return self._do(ops.usage(**q))

    def usage_csv(
        self, *, since: When = None, until: When = None, granularity: str | None = None,
        group_by: str | None = None, endpoint_id: str | None = None, key_id: str | None = None,
    ) -> str:  # fmt: skip
        q = _query(since=since, until=until, granularity=granularity, group_by=group_by, endpoint_id=endpoint_id,
                   key_id=key_id)  # fmt: skip
        return self._do(ops.usage_csv(**q))

    # webhooks
    def create_webhook(self, url: str, events: list[str], description: str | None = None) -> m.WebhookCreated:
        return self._do(ops.create_webhook(url, events, description))

    def list_webhooks(self) -> list[m.Webhook]:
        return self._do(ops.list_webhooks())

    def get_webhook(self, webhook_id: str) -> m.Webhook:
        return self._do(ops.get_webhook(webhook_id))

    def update_webhook(self, webhook_id: str, **fields: Any) -> m.Webhook:
        return self._do(ops.update_webhook(webhook_id, **fields))

    def delete_webhook(self, webhook_id: str) -> None:
        return self._do(ops.delete_webhook(webhook_id))

    def test_webhook(self, webhook_id: str) -> m.Delivery:
        return self._do(ops.test_webhook(webhook_id))

    def list_deliveries(self, webhook_id: str, limit: int = 20, cursor: str | None = None) -> m.DeliveryPage:
        return self._do(ops.list_deliveries(webhook_id, limit, cursor))

    def retry_delivery(self, webhook_id: str, delivery_id: str) -> m.Delivery:
        return self._do(ops.retry_delivery(webhook_id, delivery_id))


class AsyncOwnerMethods:
    async def _do(self, call: Call[T]) -> T:
        raise NotImplementedError  # AsyncClient's

    async def list_server_tools(self, workspace_id: str, server_id: str) -> list[m.ToolInfo]:
        return await self._do(ops.list_server_tools(workspace_id, server_id))

    # caller keys
    async def create_key(self, endpoint_id: str, name: str, **fields: Any) -> m.KeyCreated:
        return await self._do(ops.create_key(endpoint_id, name, **fields))

    async def list_keys(self, endpoint_id: str) -> list[m.Key]:
        return await self._do(ops.list_keys(endpoint_id))

    async def get_key(self, endpoint_id: str, key_id: str) -> m.Key:
        return await self._do(ops.get_key(endpoint_id, key_id))

    async def update_key(self, endpoint_id: str, key_id: str, **fields: Any) -> m.Key:
        return await self._do(ops.update_key(endpoint_id, key_id, **fields))

    async def revoke_key(self, endpoint_id: str, key_id: str) -> None:
        return await self._do(ops.revoke_key(endpoint_id, key_id))

    # payments and alerts
    async def deposits(self) -> list[m.DepositRecord]:
        return await self._do(ops.deposits())

    async def auto_recharge(self) -> m.AutoRecharge:
        return await self._do(ops.auto_recharge())

    async def set_auto_recharge(self, enabled: bool, threshold_cents: int, amount_cents: int) -> m.AutoRecharge:
        return await self._do(ops.set_auto_recharge(enabled, threshold_cents, amount_cents))

    async def balance_alerts(self) -> m.BalanceAlerts:
        return await self._do(ops.balance_alerts())

    async def set_balance_alerts(self, low_balance_cents: int | None) -> m.BalanceAlerts:
        return await self._do(ops.set_balance_alerts(low_balance_cents))

    # usage
    async def usage(
        self, *, since: When = None, until: When = None, granularity: str | None = None,
        group_by: str | None = None, endpoint_id: str | None = None, key_id: str | None = None,
    ) -> m.UsageReport:  # fmt: skip
        q = _query(since=since, until=until, granularity=granularity, group_by=group_by, endpoint_id=endpoint_id,
                   key_id=key_id)  # fmt: skip
        return await self._do(ops.usage(**q))

    async def usage_csv(
        self, *, since: When = None, until: When = None, granularity: str | None = None,
        group_by: str | None = None, endpoint_id: str | None = None, key_id: str | None = None,
    ) -> str:  # fmt: skip
        q = _query(since=since, until=until, granularity=granularity, group_by=group_by, endpoint_id=endpoint_id,
                   key_id=key_id)  # fmt: skip
        return await self._do(ops.usage_csv(**q))

    # webhooks
    async def create_webhook(self, url: str, events: list[str], description: str | None = None) -> m.WebhookCreated:
        return await self._do(ops.create_webhook(url, events, description))

    async def list_webhooks(self) -> list[m.Webhook]:
        return await self._do(ops.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> m.Webhook:
        return await self._do(ops.get_webhook(webhook_id))

    async def update_webhook(self, webhook_id: str, **fields: Any) -> m.Webhook:
        return await self._do(ops.update_webhook(webhook_id, **fields))

    async def delete_webhook(self, webhook_id: str) -> None:
        return await self._do(ops.delete_webhook(webhook_id))

    async def test_webhook(self, webhook_id: str) -> m.Delivery:
        return await self._do(ops.test_webhook(webhook_id))

    async def list_deliveries(self, webhook_id: str, limit: int = 20, cursor: str | None = None) -> m.DeliveryPage:
        return await self._do(ops.list_deliveries(webhook_id, limit, cursor))

    async def retry_delivery(self, webhook_id: str, delivery_id: str) -> m.Delivery:
        return await self._do(ops.retry_delivery(webhook_id, delivery_id))
