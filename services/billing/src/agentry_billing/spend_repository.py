"""All SQL of spend caps. Every change of a counter is one conditional statement, so concurrent requests on any
number of billing replicas serialize on the counter's row and a cap is never passed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_HOLD = text(
    "INSERT INTO billing.spend_reservations (run_id, scope, period_start, amount_cents) "
    "VALUES (:run_id, :scope, :period_start, :amount) ON CONFLICT (run_id, scope) DO NOTHING RETURNING run_id"
)
_COUNTER = text(
    "INSERT INTO billing.spend_counters (scope, period_start) VALUES (:scope, :period_start) ON CONFLICT DO NOTHING"
)
# The row lock makes concurrent reservations wait for each other; PostgreSQL then re-checks the WHERE against the
# row as the previous one left it, so the sum never passes the cap.
_RESERVE = text(
    "UPDATE billing.spend_counters SET reserved_cents = reserved_cents + :amount "
    "WHERE scope = :scope AND period_start = :period_start AND spent_cents + reserved_cents + :amount <= :cap "
    "RETURNING spent_cents + reserved_cents"
)
_TOTAL = text(
    "SELECT spent_cents + reserved_cents FROM billing.spend_counters "
    "WHERE scope = :scope AND period_start = :period_start"
)
# Ends a hold: settled (the run completed: its price counts, collected or not) or released (it failed, or never
# started). A released hold whose run completes after all (the sweeper was early) still counts as spent.
_END = text(
    "WITH old AS (SELECT run_id, scope, status FROM billing.spend_reservations "
    "  WHERE run_id = :run_id AND scope = :scope FOR UPDATE), "
    "ended AS (UPDATE billing.spend_reservations r SET status = :to, ended_at = now() FROM old "
    "  WHERE r.run_id = old.run_id AND r.scope = old.scope "
    "  AND (old.status = 'held' OR (old.status = 'released' AND :to = 'settled')) "
    "  RETURNING r.scope, r.period_start, r.amount_cents, old.status AS was) "
    "UPDATE billing.spend_counters c SET "
    "  spent_cents = c.spent_cents + CASE WHEN :to = 'settled' THEN ended.amount_cents ELSE 0 END, "
    "  reserved_cents = c.reserved_cents - CASE WHEN ended.was = 'held' THEN ended.amount_cents ELSE 0 END "
    "FROM ended WHERE c.scope = ended.scope AND c.period_start = ended.period_start RETURNING c.scope"
)
# In counter order, so that transactions ending holds on several counters lock them in the same order.
_OPEN = text(
    "SELECT run_id, scope FROM billing.spend_reservations "
    "WHERE run_id = ANY(:run_ids) AND status IN ('held', 'released') "
    "ORDER BY scope, period_start, run_id"
)
_STALE = text(
    "SELECT run_id, scope FROM billing.spend_reservations WHERE status = 'held' AND created_at < :before "
    "ORDER BY created_at LIMIT :limit"
)

# Once per period and budget amount: true only for the first caller (the counter is made when a refusal rolled
# back the only reservation that would have made it).
_REACHED = text(
    "INSERT INTO billing.spend_counters AS c (scope, period_start, reached_cap_cents) "
    "VALUES (:scope, :period_start, :cap) "
    "ON CONFLICT (scope, period_start) DO UPDATE SET reached_cap_cents = :cap "
    "WHERE c.reached_cap_cents IS DISTINCT FROM :cap RETURNING c.scope"
)


class SpendRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def _run(self, sql: Any, **params: Any) -> Any:
        return await self.session.execute(sql, params)

    async def hold(self, run_id: str, scope: str, period_start: datetime, amount: int) -> bool:
        """Record the run's hold; False when it already has one (a retried request)."""
        inserted = await self._run(_HOLD, run_id=run_id, scope=scope, period_start=period_start, amount=amount)
        return inserted.first() is not None

    async def reserve(self, scope: str, period_start: datetime, amount: int, cap: int) -> int | None:
        """Add `amount` to the period's holds if it stays within `cap`: the new total, or None (refused)."""
        await self._run(_COUNTER, scope=scope, period_start=period_start)
        row = (await self._run(_RESERVE, scope=scope, period_start=period_start, amount=amount, cap=cap)).first()
        return None if row is None else int(row[0])

    async def total(self, scope: str, period_start: datetime) -> int:
        value = (await self._run(_TOTAL, scope=scope, period_start=period_start)).scalar()
        return int(value or 0)

    async def end(self, run_id: str, scope: str, to: Literal["settled", "released"]) -> int:
        """Settle or release the run's hold in a scope: 1, or 0 when it has none (or it already ended that way)."""
        return 1 if (await self._run(_END, run_id=run_id, scope=scope, to=to)).first() is not None else 0

    async def with_holds(self, run_ids: Sequence[str]) -> list[tuple[str, str]]:
        """Which holds of these runs are still to settle, as (run_id, scope) in counter order: one indexed read
        for a whole batch of run outcomes."""
        return [(row[0], row[1]) for row in await self._run(_OPEN, run_ids=list(run_ids))]

    async def stale_holds(self, before: datetime, limit: int) -> Sequence[tuple[str, str]]:
        return [(row[0], row[1]) for row in await self._run(_STALE, before=before, limit=limit)]

    async def mark_reached(self, scope: str, period_start: datetime, cap: int) -> bool:
        """Record that the period's budget of `cap` is reached: True the first time (announce it), else False."""
        return (await self._run(_REACHED, scope=scope, period_start=period_start, cap=cap)).first() is not None
