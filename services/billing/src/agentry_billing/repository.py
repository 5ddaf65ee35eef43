"""All SQL of the billing service.

Hot paths (charging a batch) move a whole batch per statement as one JSON document expanded by
`json_to_recordset`: one round trip and one plan per batch whatever its size, and the rows are encoded by
orjson rather than escaped value by value by the driver. Every writer of a wallet's money or charges first
locks the wallet row (`lock_wallets`, in owner order), so the wallet row is the mutex for all it owns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from .domain import Book, ChargeOutcome, ChargeState, Debt, Posting


@dataclass(frozen=True)
class NewCharge:
    id: str
    run_id: str
    owner_id: str
    endpoint_id: str
    amount_cents: int
    cost_cents: Decimal
    state: ChargeState
    event_id: str


@dataclass(frozen=True)
class NewEntry:
    id: str
    owner_id: str
    kind: str
    posting: Posting
    charge_id: str | None = None
    credit_id: str | None = None
    run_id: str | None = None
    endpoint_id: str | None = None
    reversal_id: str | None = None  # a refund's or dispute's (payments)


@dataclass(frozen=True)
class CreditRow:
    id: str
    owner_id: str
    kind: str
    fingerprint: str
    amount_cents: int
    balance_after_cents: int
    created_at: datetime


@dataclass(frozen=True)
class ActivityRow:
    id: str
    seq: int
    kind: str
    amount_cents: int
    run_id: str | None
    endpoint_id: str | None
    status: str
    created_at: datetime


def _outcome(row: Any) -> ChargeOutcome:
    return ChargeOutcome(
        charge_id=row.id,
        run_id=row.run_id,
        endpoint_id=row.endpoint_id,
        owner_id=row.owner_id,
        amount_cents=row.amount_cents,
        state=row.status,
        at=row.settled_at or row.created_at,
    )


def _json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


class BillingRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def _run(self, sql: str, **params: Any) -> Any:
        return await self.session.execute(text(sql), params)

    # --- wallets ---

    async def lock_wallets(self, owner_ids: Sequence[str]) -> dict[str, Book]:
        """Lock the owners' wallets, creating missing ones. Existing wallets are locked in owner order, then
        new ones in owner order, so concurrent batches wait for each other instead of deadlocking."""
        owners = sorted(set(owner_ids))
        books = await self._lock(owners)
        missing = [o for o in owners if o not in books]
        if missing:
            await self._run(
                "INSERT INTO billing.wallets (owner_id) SELECT unnest(CAST(:owners AS varchar[])) ORDER BY 1 "
                "ON CONFLICT (owner_id) DO NOTHING",
                owners=missing,
            )
            books.update(await self._lock(missing))
        return books

    async def _lock(self, owners: list[str]) -> dict[str, Book]:
        rows = await self._run(
            "SELECT owner_id, balance_cents, last_entry_no FROM billing.wallets "
            "WHERE owner_id = ANY(CAST(:owners AS varchar[])) ORDER BY owner_id FOR UPDATE",
            owners=owners,
        )
        return {r.owner_id: Book(r.owner_id, r.balance_cents, r.last_entry_no) for r in rows}

    async def write_back(self, books: Sequence[Book]) -> None:
        """Store the books' new balances, chain heads and totals. Runs before their entries are inserted."""
        if not books:
            return
        rows = [
            {"o": b.owner_id, "b": b.balance_cents, "n": b.last_entry_no, "d": b.deposited_cents,
             "s": b.spent_cents, "u": b.uncollected_cents}
            for b in books
        ]  # fmt: skip
        await self._run(
            """
            UPDATE billing.wallets AS w SET
                balance_cents = v.b, last_entry_no = v.n,
                lifetime_deposited_cents = w.lifetime_deposited_cents + v.d,
                lifetime_spent_cents = w.lifetime_spent_cents + v.s,
                uncollected_cents = w.uncollected_cents + v.u,
                updated_at = now()
            FROM json_to_recordset(CAST(:rows AS json))
                 AS v(o varchar, b bigint, n bigint, d bigint, s bigint, u bigint)
            WHERE w.owner_id = v.o
            """,
            rows=_json(rows),
        )

    async def get_wallet(self, owner_id: str) -> Any:
        result = await self._run(
            "SELECT balance_cents, currency, lifetime_deposited_cents, lifetime_spent_cents, uncollected_cents "
            "FROM billing.wallets WHERE owner_id = :owner_id",
            owner_id=owner_id,
        )
        return result.one_or_none()

    # --- ledger ---

    async def insert_entries(self, entries: Sequence[NewEntry]) -> None:
        if not entries:
            return
        rows = [
            {"id": e.id, "owner_id": e.owner_id, "entry_no": e.posting.entry_no, "kind": e.kind,
             "amount_cents": e.posting.amount_cents, "balance_after_cents": e.posting.balance_after_cents,
             "prev_entry_no": e.posting.prev_entry_no, "prev_balance_after_cents": e.posting.prev_balance_after_cents,
             "charge_id": e.charge_id, "credit_id": e.credit_id, "run_id": e.run_id, "endpoint_id": e.endpoint_id,
             "reversal_id": e.reversal_id}
            for e in entries
        ]  # fmt: skip
        await self._run(
            """
            INSERT INTO billing.ledger_entries (id, owner_id, entry_no, kind, amount_cents, balance_after_cents,
                prev_entry_no, prev_balance_after_cents, charge_id, credit_id, run_id, endpoint_id, reversal_id)
            SELECT id, owner_id, entry_no, kind, amount_cents, balance_after_cents, prev_entry_no,
                prev_balance_after_cents, charge_id, credit_id, run_id, endpoint_id, reversal_id
            FROM json_to_recordset(CAST(:rows AS json)) AS r(id varchar, owner_id varchar, entry_no bigint,
                kind varchar, amount_cents bigint, balance_after_cents bigint, prev_entry_no bigint,
                prev_balance_after_cents bigint, charge_id varchar, credit_id varchar, run_id varchar,
                endpoint_id varchar, reversal_id varchar)
            """,
            rows=_json(rows),
        )

    # --- charges ---

    async def find_charges(self, run_ids: Sequence[str]) -> dict[str, ChargeOutcome]:
        rows = await self._run(
            "SELECT id, run_id, owner_id, endpoint_id, amount_cents, status, created_at, settled_at "
            "FROM billing.charges WHERE run_id = ANY(CAST(:run_ids AS varchar[]))",
            run_ids=list(run_ids),
        )
        return {r.run_id: _outcome(r) for r in rows}

    async def insert_charges(self, charges: Sequence[NewCharge]) -> tuple[int, datetime]:
        """Insert charges that do not exist yet; returns how many were inserted, and their `created_at`
        (the transaction's time, the same for all)."""
        rows = [
            {"id": c.id, "run_id": c.run_id, "owner_id": c.owner_id, "endpoint_id": c.endpoint_id,
             "amount_cents": c.amount_cents, "cost_cents": str(c.cost_cents), "status": c.state,
             "event_id": c.event_id}
            for c in charges
        ]  # fmt: skip
        result = await self._run(
            """
            WITH inserted AS (
                INSERT INTO billing.charges (id, run_id, owner_id, endpoint_id, amount_cents, cost_cents, status,
                    event_id)
                SELECT id, run_id, owner_id, endpoint_id, amount_cents, cost_cents, status, event_id
                FROM json_to_recordset(CAST(:rows AS json)) AS r(id varchar, run_id varchar, owner_id varchar,
                    endpoint_id varchar, amount_cents bigint, cost_cents numeric, status varchar,
                    event_id varchar)
                ON CONFLICT (run_id) DO NOTHING
                RETURNING 1
            )
            SELECT count(*) AS inserted, now() AS created_at FROM inserted
            """,
            rows=_json(rows),
        )
        row = result.one()
        return int(row.inserted), row.created_at

    async def settleable_debts(self, owner_id: str, balance_cents: int) -> list[Debt]:
        """The oldest uncollected charges whose running total fits the balance (the caller holds the wallet)."""
        rows = await self._run(
            """
            SELECT id, run_id, endpoint_id, amount_cents FROM (
                SELECT id, run_id, endpoint_id, amount_cents, seq,
                       sum(amount_cents) OVER (ORDER BY seq) AS running
                FROM billing.charges WHERE owner_id = :owner_id AND status = 'uncollected'
            ) AS debts
            WHERE running <= :balance ORDER BY seq
            """,
            owner_id=owner_id,
            balance=balance_cents,
        )
        return [Debt(r.id, r.run_id, r.endpoint_id, r.amount_cents) for r in rows]

    async def mark_settled(self, charge_ids: Sequence[str], credit_id: str) -> int:
        result = await self._run(
            "UPDATE billing.charges SET status = 'settled', settled_at = now(), settled_by = :credit_id "
            "WHERE id = ANY(CAST(:ids AS varchar[])) AND status = 'uncollected'",
            ids=list(charge_ids),
            credit_id=credit_id,
        )
        return int(result.rowcount)

    async def settled_by(self, credit_id: str) -> list[ChargeOutcome]:
        rows = await self._run(
            "SELECT id, run_id, owner_id, endpoint_id, amount_cents, status, created_at, settled_at "
            "FROM billing.charges WHERE settled_by = :credit_id ORDER BY seq",
            credit_id=credit_id,
        )
        return [_outcome(r) for r in rows]

    async def charge_states(self, run_ids: Sequence[str]) -> list[Any]:
        result = await self._run(
            "SELECT run_id, amount_cents, status FROM billing.charges WHERE run_id = ANY(CAST(:run_ids AS varchar[]))",
            run_ids=list(run_ids),
        )
        return list(result)

    # --- credits ---

    async def find_credit(self, scope: str, idempotency_key: str) -> CreditRow | None:
        result = await self._run(
            "SELECT id, owner_id, kind, fingerprint, amount_cents, balance_after_cents, created_at "
            "FROM billing.credits WHERE scope = :scope AND idempotency_key = :key",
            scope=scope,
            key=idempotency_key,
        )
        row = result.one_or_none()
        return None if row is None else CreditRow(*row)

    async def insert_credit(
        self,
        *,
        id: str,
        scope: str,
        idempotency_key: str,
        fingerprint: str,
        owner_id: str,
        kind: str,
        amount_cents: int,
        reason: str | None,
        actor_id: str | None,
        balance_after_cents: int,
    ) -> datetime | None:
        """Record a credit under its idempotency key; None when the key was taken meanwhile."""
        result = await self._run(
            """
            INSERT INTO billing.credits (id, scope, idempotency_key, fingerprint, owner_id, kind, amount_cents,
                reason, actor_id, balance_after_cents)
            VALUES (:id, :scope, :key, :fingerprint, :owner_id, :kind, :amount, :reason, :actor_id, :balance)
            ON CONFLICT (scope, idempotency_key) DO NOTHING
            RETURNING created_at
            """,
            id=id,
            scope=scope,
            key=idempotency_key,
            fingerprint=fingerprint,
            owner_id=owner_id,
            kind=kind,
            amount=amount_cents,
            reason=reason,
            actor_id=actor_id,
            balance=balance_after_cents,
        )
        return result.scalar_one_or_none()  # type: ignore[no-any-return]

    async def credit_entry_id(self, credit_id: str) -> str:
        result = await self._run(
            "SELECT id FROM billing.ledger_entries WHERE credit_id = :credit_id", credit_id=credit_id
        )
        return str(result.scalar_one())

    # --- activity ---

    async def activity(self, owner_id: str, before_seq: int | None, limit: int) -> list[ActivityRow]:
        """A wallet's transactions, newest first: credits and settlements from the ledger, and every run
        charge (whatever became of it) from `charges`."""
        rows = await self._run(
            """
            (SELECT id, seq, kind, amount_cents, run_id, endpoint_id,
                    CASE kind WHEN 'settlement' THEN 'collected' ELSE 'completed' END AS status, created_at
             FROM billing.ledger_entries
             WHERE owner_id = :owner_id AND kind <> 'run_charge' AND seq < :before
             ORDER BY seq DESC LIMIT :limit)
            UNION ALL
            (SELECT id, seq, 'run_charge', -amount_cents, run_id, endpoint_id, status, created_at
             FROM billing.charges
             WHERE owner_id = :owner_id AND seq < :before
             ORDER BY seq DESC LIMIT :limit)
            ORDER BY seq DESC LIMIT :limit
            """,
            owner_id=owner_id,
            before=before_seq if before_seq is not None else 2**63 - 1,
            limit=limit,
        )
        return [ActivityRow(*r) for r in rows]
