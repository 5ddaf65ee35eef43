"""The reconciliation's SQL (read-only): recompute every wallet from its ledger and every charge, credit and
reversal from the entries that moved its money, independently of the constraints that should make them agree.
Each query takes `owners` (None: every owner); run them in one repeatable-read snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_WALLETS = """
WITH e AS (
    SELECT owner_id, sum(amount_cents) AS total, count(*) AS entries, max(entry_no) AS last_no,
           coalesce(sum(amount_cents) FILTER (WHERE amount_cents > 0), 0) AS credited,
           coalesce(-sum(amount_cents) FILTER (WHERE amount_cents < 0), 0) AS debited
    FROM billing.ledger_entries GROUP BY owner_id
), c AS (
    SELECT owner_id, sum(amount_cents) AS uncollected
    FROM billing.charges WHERE status = 'uncollected' GROUP BY owner_id
), chain AS (
    SELECT owner_id, count(*) AS broken FROM (
        SELECT owner_id, balance_after_cents,
               sum(amount_cents) OVER (PARTITION BY owner_id ORDER BY entry_no) AS running
        FROM billing.ledger_entries
    ) AS r WHERE running <> balance_after_cents OR balance_after_cents < 0 GROUP BY owner_id
)
SELECT w.owner_id, w.balance_cents, coalesce(e.total, 0) AS ledger_cents,
       w.lifetime_deposited_cents, coalesce(e.credited, 0) AS credited_cents,
       w.lifetime_spent_cents, coalesce(e.debited, 0) AS debited_cents,
       w.uncollected_cents, coalesce(c.uncollected, 0) AS owed_cents,
       w.last_entry_no, e.last_no, coalesce(e.entries, 0) AS entries, coalesce(chain.broken, 0) AS broken
FROM billing.wallets AS w
LEFT JOIN e USING (owner_id) LEFT JOIN c USING (owner_id) LEFT JOIN chain USING (owner_id)
WHERE CAST(:owners AS varchar[]) IS NULL OR w.owner_id = ANY(CAST(:owners AS varchar[]))
ORDER BY w.owner_id
"""

# A charge moved money exactly once iff collected/settled, by the matching entry kind, from its own wallet.
_CHARGES = """
SELECT c.owner_id, c.run_id, c.status, c.amount_cents, count(e.entry_no) AS entries
FROM billing.charges AS c LEFT JOIN billing.ledger_entries AS e ON e.charge_id = c.id
WHERE CAST(:owners AS varchar[]) IS NULL OR c.owner_id = ANY(CAST(:owners AS varchar[]))
GROUP BY c.id
HAVING NOT (
    (c.status = 'uncollected' AND count(e.entry_no) = 0)
    OR (c.status IN ('collected', 'settled') AND count(e.entry_no) = 1
        AND sum(e.amount_cents) = -c.amount_cents AND bool_and(e.owner_id = c.owner_id)
        AND min(e.kind) = CASE c.status WHEN 'collected' THEN 'run_charge' ELSE 'settlement' END)
)
"""

_CREDITS = """
SELECT cr.owner_id, cr.id, cr.amount_cents, count(e.entry_no) AS entries
FROM billing.credits AS cr LEFT JOIN billing.ledger_entries AS e ON e.credit_id = cr.id
WHERE CAST(:owners AS varchar[]) IS NULL OR cr.owner_id = ANY(CAST(:owners AS varchar[]))
GROUP BY cr.id
HAVING NOT (count(e.entry_no) = 1 AND sum(e.amount_cents) = cr.amount_cents AND min(e.kind) = cr.kind
            AND bool_and(e.owner_id = cr.owner_id))
"""

# A refund or dispute took back exactly what it says it took (its amount less what is still owed), by entries of
# its own kind, from its own wallet.
_REVERSALS = """
SELECT r.owner_id, r.id, r.kind, r.amount_cents - r.owed_cents AS taken, coalesce(-sum(e.amount_cents), 0) AS moved
FROM billing.reversals AS r LEFT JOIN billing.ledger_entries AS e ON e.reversal_id = r.id
WHERE CAST(:owners AS varchar[]) IS NULL OR r.owner_id = ANY(CAST(:owners AS varchar[]))
GROUP BY r.id
HAVING coalesce(-sum(e.amount_cents), 0) <> r.amount_cents - r.owed_cents
    OR NOT coalesce(bool_and(e.owner_id = r.owner_id AND e.kind = r.kind), true)
"""


class AuditRepository:
    def __init__(self, conn: AsyncConnection):
        self.conn = conn

    async def _rows(self, sql: str, owners: Sequence[str] | None) -> list[Any]:
        params = {"owners": list(owners) if owners is not None else None}
        return list(await self.conn.execute(text(sql), params))

    async def wallets(self, owners: Sequence[str] | None) -> list[Any]:
        """Each wallet beside what its ledger entries and uncollected charges add up to."""
        return await self._rows(_WALLETS, owners)

    async def charges_moved_wrongly(self, owners: Sequence[str] | None) -> list[Any]:
        return await self._rows(_CHARGES, owners)

    async def credits_moved_wrongly(self, owners: Sequence[str] | None) -> list[Any]:
        return await self._rows(_CREDITS, owners)

    async def reversals_moved_wrongly(self, owners: Sequence[str] | None) -> list[Any]:
        return await self._rows(_REVERSALS, owners)
