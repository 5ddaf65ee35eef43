"""Spend caps and endpoint budgets: a limited run holds its price in billing before any work (402 when it would
pass the key's cap or the endpoint's budget).

Billing owns money, so it keeps the per-period counters and decides atomically across every gateway replica.
Only a run with a cap or a budget and a price asks: otherwise this costs nothing.
"""

from __future__ import annotations

from nats.aio.client import Client

from agentry_common import rpc, subjects
from agentry_common.events import EndpointSnapshot
from agentry_common.requests import (
    Done,
    GetSpent,
    KeyInfo,
    ReleaseSpend,
    ReserveSpend,
    SpendLimit,
    SpendReserved,
    SpendScope,
    Spent,
    VerifiedKey,
)

from .settings import Settings


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def endpoint_scope(endpoint_id: str) -> str:
    return f"endpoint:{endpoint_id}"


class SpendCaps:
    def __init__(self, nc: Client, settings: Settings):
        self.nc = nc
        self.settings = settings

    async def _call(self, subject: str, request: object, reply: type) -> object:
        return await rpc.call(
            self.nc, subject, request, reply,  # type: ignore[arg-type]
            timeout=self.settings.rpc_timeout_s, unavailable="billing is unavailable; spend caps cannot be checked",
        )  # fmt: skip

    async def reserve(self, run_id: str, key: VerifiedKey | None, endpoint: EndpointSnapshot) -> bool:
        """Hold the run's price in its endpoint's budget and its key's cap, both or neither, with one request
        (raises 402 `endpoint_budget_reached` / `key_spend_cap_reached`); False: nothing to hold."""
        price_cents = endpoint.price_per_run_cents
        limits = []
        if endpoint.budget_cents is not None:
            budget = SpendLimit(
                scope=endpoint_scope(endpoint.id), period=endpoint.budget_period, cap_cents=endpoint.budget_cents,
                code="endpoint_budget_reached", what="this endpoint's budget",
                endpoint_id=endpoint.id, owner_id=endpoint.owner_id,
            )  # fmt: skip
            limits.append(budget)
        if key is not None and key.key_id is not None and key.spend_cap_cents is not None:
            cap = SpendLimit(
                scope=key_scope(key.key_id), period=key.spend_cap_period, cap_cents=key.spend_cap_cents,
                code="key_spend_cap_reached", what="this API key's spend cap",
            )  # fmt: skip
            limits.append(cap)
        if not limits or price_cents <= 0:  # the seed's rule: no limit, no pre-check
            return False
        request = ReserveSpend(run_id=run_id, amount_cents=price_cents, limits=limits)
        await self._call(subjects.SPEND_RESERVE, request, SpendReserved)
        return True

    async def release(self, run_id: str) -> None:
        await self._call(subjects.SPEND_RELEASE, ReleaseSpend(run_id=run_id), Done)

    async def spent(self, keys: list[KeyInfo]) -> dict[str, int]:
        """The current period's spend of each capped key, by key id."""
        scopes = [
            SpendScope(scope=key_scope(k.id), period=k.spend_cap_period) for k in keys if k.spend_cap_cents is not None
        ]
        if not scopes:
            return {}
        found = await self._call(subjects.SPEND_TOTALS, GetSpent(scopes=scopes), Spent)
        assert isinstance(found, Spent)
        return {k.id: found.spent_cents.get(key_scope(k.id), 0) for k in keys if k.spend_cap_cents is not None}
