"""All SQL of payments (money in through Stripe). Writers of a wallet's money lock the wallet first, as in
`repository`; a deposit's row is locked before its wallet, by every path that credits it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class DepositRow:
    id: str
    owner_id: str
    source: str
    status: str
    amount_cents: int
    currency: str
    idempotency_key: str
    checkout_session_id: str | None
    checkout_url: str | None
    payment_intent_id: str | None
    credit_id: str | None
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class Recharge:
    """An auto-recharge deposit a crossing created, to be paid off-session once its transaction commits."""

    deposit_id: str
    owner_id: str
    amount_cents: int
    currency: str
    crossing: int


@dataclass(frozen=True)
class OwedReversal:
    id: str
    kind: str
    owed_cents: int


class PaymentsRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    async def _run(self, sql: str, **params: Any) -> Any:
        return await self.session.execute(text(sql), params)

    # --- deposits ---

    async def insert_deposit(self, *, id: str, owner_id: str, source: str, amount_cents: int, currency: str,
                             idempotency_key: str) -> DepositRow:  # fmt: skip
        """The deposit under this key: the new one, or the one a concurrent request inserted first."""
        await self._run(
            "INSERT INTO billing.deposits (id, owner_id, source, amount_cents, currency, idempotency_key) "
            "VALUES (:id, :owner_id, :source, :amount, :currency, :key) ON CONFLICT (owner_id, idempotency_key) "
            "DO NOTHING",
            id=id, owner_id=owner_id, source=source, amount=amount_cents, currency=currency, key=idempotency_key,
        )  # fmt: skip
        found = await self.deposit_by_key(owner_id, idempotency_key)
        assert found is not None
        return found

    async def deposit_by_key(self, owner_id: str, idempotency_key: str) -> DepositRow | None:
        result = await self._run(
            "SELECT id, owner_id, source, status, amount_cents, currency, idempotency_key, checkout_session_id, "
            "checkout_url, payment_intent_id, credit_id, created_at, completed_at FROM billing.deposits "
            "WHERE owner_id = :o AND idempotency_key = :k",
            o=owner_id,
            k=idempotency_key,
        )
        row = result.one_or_none()
        return None if row is None else DepositRow(*row)

    async def lock_deposit(
        self, deposit_id: str | None = None, payment_intent_id: str | None = None
    ) -> DepositRow | None:
        """Lock a deposit by id or by its PaymentIntent: whoever changes its status holds this lock."""
        if deposit_id is None and payment_intent_id is None:
            return None
        result = await self._run(
            "SELECT id, owner_id, source, status, amount_cents, currency, idempotency_key, checkout_session_id, "
            "checkout_url, payment_intent_id, credit_id, created_at, completed_at FROM billing.deposits "
            "WHERE (CAST(:id AS varchar) IS NOT NULL AND id = :id) OR (CAST(:pi AS varchar) IS NOT NULL "
            "AND payment_intent_id = :pi) ORDER BY id LIMIT 1 FOR UPDATE",
            id=deposit_id,
            pi=payment_intent_id,
        )
        row = result.one_or_none()
        return None if row is None else DepositRow(*row)

    async def set_checkout(self, deposit_id: str, session_id: str, url: str) -> None:
        await self._run(
            "UPDATE billing.deposits SET checkout_session_id = :s, checkout_url = :u WHERE id = :id",
            id=deposit_id,
            s=session_id,
            u=url,
        )

    async def set_payment_intent(self, deposit_id: str, payment_intent_id: str) -> None:
        await self._run(
            "UPDATE billing.deposits SET payment_intent_id = :pi WHERE id = :id AND payment_intent_id IS NULL",
            id=deposit_id,
            pi=payment_intent_id,
        )

    async def finish_deposit(self, deposit_id: str, status: str, credit_id: str | None = None) -> None:
        await self._run(
            "UPDATE billing.deposits SET status = CAST(:status AS varchar), credit_id = :credit_id, "
            "completed_at = CASE WHEN CAST(:status AS varchar) = 'succeeded' THEN now() END "
            "WHERE id = :id AND status <> 'succeeded'",
            id=deposit_id,
            status=status,
            credit_id=credit_id,
        )

    async def list_deposits(self, owner_id: str, limit: int) -> list[Any]:
        """Stripe deposits, and deposits the manual payment mode credited at once (from `credits`)."""
        result = await self._run(
            """
            (SELECT id, status, amount_cents, currency, source,
                    CASE WHEN status = 'pending' THEN checkout_url END AS checkout_url, created_at, completed_at
             FROM billing.deposits WHERE owner_id = :o ORDER BY created_at DESC LIMIT :limit)
            UNION ALL
            (SELECT c.id, 'succeeded', c.amount_cents, w.currency, 'manual', NULL, c.created_at, c.created_at
             FROM billing.credits AS c JOIN billing.wallets AS w USING (owner_id)
             WHERE c.owner_id = :o AND c.kind = 'deposit' AND c.scope = c.owner_id
             ORDER BY c.created_at DESC LIMIT :limit)
            ORDER BY created_at DESC LIMIT :limit
            """,
            o=owner_id,
            limit=limit,
        )
        return list(result)

    async def pending_recharges(self, older_than_s: float, limit: int = 100) -> list[Recharge]:
        """Auto-recharges whose payment was never started (the process stopped right after the crossing)."""
        result = await self._run(
            "SELECT d.id, d.owner_id, d.amount_cents, d.currency, d.idempotency_key FROM billing.deposits AS d "
            "WHERE d.source = 'auto_recharge' AND d.status = 'pending' AND d.payment_intent_id IS NULL "
            "AND d.created_at < now() - make_interval(secs => :age) ORDER BY d.created_at LIMIT :limit",
            age=older_than_s,
            limit=limit,
        )
        return [Recharge(r.id, r.owner_id, r.amount_cents, r.currency, int(r.idempotency_key.rsplit(":", 1)[1]))
                for r in result]  # fmt: skip

    # --- Stripe customers and events ---

    async def customer(self, owner_id: str) -> Any:
        result = await self._run(
            "SELECT customer_id, payment_method_id FROM billing.payment_customers WHERE owner_id = :o", o=owner_id
        )
        return result.one_or_none()

    async def save_customer(self, owner_id: str, customer_id: str) -> str:
        """Keep the first customer recorded for an owner (Stripe's idempotency key makes a race return it)."""
        await self._run(
            "INSERT INTO billing.payment_customers (owner_id, customer_id) VALUES (:o, :c) "
            "ON CONFLICT (owner_id) DO NOTHING",
            o=owner_id,
            c=customer_id,
        )
        return str((await self.customer(owner_id)).customer_id)

    async def save_payment_method(self, owner_id: str, customer_id: str, payment_method_id: str) -> None:
        await self._run(
            "UPDATE billing.payment_customers SET payment_method_id = :pm, updated_at = now() "
            "WHERE owner_id = :o AND customer_id = :c",
            o=owner_id,
            c=customer_id,
            pm=payment_method_id,
        )

    async def record_event(self, event_id: str, event_type: str) -> bool:
        """Claim a Stripe event for this transaction; False when it was processed (or is being processed:
        the insert waits for that transaction, and conflicts if it commits)."""
        result = await self._run(
            "INSERT INTO billing.stripe_events (id, type) VALUES (:id, :type) ON CONFLICT (id) DO NOTHING RETURNING 1",
            id=event_id,
            type=event_type,
        )
        return result.scalar_one_or_none() is not None

    async def count_events(self, event_id: str) -> int:
        result = await self._run("SELECT count(*) FROM billing.stripe_events WHERE id = :id", id=event_id)
        return int(result.scalar_one())

    # --- refunds and disputes ---

    async def reversed_cents(self, deposit_id: str, kind: str | None = None) -> int:
        result = await self._run(
            "SELECT coalesce(sum(amount_cents), 0) FROM billing.reversals WHERE deposit_id = :d "
            "AND (CAST(:kind AS varchar) IS NULL OR kind = :kind)",
            d=deposit_id,
            kind=kind,
        )
        return int(result.scalar_one())

    async def insert_reversal(self, *, id: str, owner_id: str, deposit_id: str, kind: str, stripe_ref: str,
                              amount_cents: int, owed_cents: int) -> bool:  # fmt: skip
        result = await self._run(
            "INSERT INTO billing.reversals (id, owner_id, deposit_id, kind, stripe_ref, amount_cents, owed_cents) "
            "VALUES (:id, :o, :d, :kind, :ref, :amount, :owed) ON CONFLICT (kind, stripe_ref) DO NOTHING RETURNING 1",
            id=id, o=owner_id, d=deposit_id, kind=kind, ref=stripe_ref, amount=amount_cents, owed=owed_cents,
        )  # fmt: skip
        return result.scalar_one_or_none() is not None

    async def owed_reversals(self, owner_id: str) -> list[OwedReversal]:
        """Refunds and disputes not yet fully taken back, oldest first (the caller holds the wallet)."""
        result = await self._run(
            "SELECT id, kind, owed_cents FROM billing.reversals WHERE owner_id = :o AND owed_cents > 0 "
            "ORDER BY created_at, id",
            o=owner_id,
        )
        return [OwedReversal(*r) for r in result]

    async def reduce_owed(self, taken: Sequence[tuple[str, int]]) -> None:
        if not taken:
            return
        await self._run(
            "UPDATE billing.reversals AS r SET owed_cents = r.owed_cents - v.t "
            "FROM json_to_recordset(CAST(:rows AS json)) AS v(id varchar, t bigint) WHERE r.id = v.id",
            rows=orjson.dumps([{"id": i, "t": t} for i, t in taken]).decode(),
        )

    async def owed_cents(self, owner_id: str) -> int:
        result = await self._run(
            "SELECT coalesce(sum(owed_cents), 0) FROM billing.reversals WHERE owner_id = :o", o=owner_id
        )
        return int(result.scalar_one())

    # --- auto-recharge ---

    async def auto_recharge(self, owner_id: str) -> Any:
        result = await self._run(
            "SELECT enabled, threshold_cents, amount_cents FROM billing.auto_recharges WHERE owner_id = :o",
            o=owner_id,
        )
        return result.one_or_none()

    async def set_auto_recharge(self, owner_id: str, enabled: bool, threshold_cents: int, amount_cents: int,
                                armed: bool) -> None:  # fmt: skip
        await self._run(
            "INSERT INTO billing.auto_recharges (owner_id, enabled, threshold_cents, amount_cents, armed) "
            "VALUES (:o, :e, :t, :a, :armed) ON CONFLICT (owner_id) DO UPDATE SET enabled = :e, "
            "threshold_cents = :t, amount_cents = :a, armed = :armed, updated_at = now()",
            o=owner_id, e=enabled, t=threshold_cents, a=amount_cents, armed=armed,
        )  # fmt: skip

    async def rearm(self, owner_id: str, balance_cents: int) -> None:
        await self._run(
            "UPDATE billing.auto_recharges SET armed = true WHERE owner_id = :o AND NOT armed AND enabled "
            "AND threshold_cents <= :b",
            o=owner_id,
            b=balance_cents,
        )

    async def fire_crossings(self, balances: dict[str, int]) -> list[Recharge]:
        """Disarm every armed auto-recharge whose wallet is now below its threshold and create its deposit, in
        one statement (run by the charge batch, under the wallets' locks: a crossing fires once)."""
        rows = [{"o": o, "b": b} for o, b in balances.items()]
        result = await self._run(
            """
            WITH fired AS (
                UPDATE billing.auto_recharges AS a SET armed = false, crossings = a.crossings + 1
                FROM json_to_recordset(CAST(:rows AS json)) AS v(o varchar, b bigint)
                WHERE a.owner_id = v.o AND a.enabled AND a.armed AND v.b < a.threshold_cents
                RETURNING a.owner_id, a.amount_cents, a.crossings
            )
            INSERT INTO billing.deposits (id, owner_id, source, amount_cents, currency, idempotency_key)
            SELECT 'dep_' || md5(f.owner_id || '/auto-recharge/' || f.crossings), f.owner_id, 'auto_recharge',
                   f.amount_cents, w.currency, 'auto-recharge:' || f.crossings
            FROM fired AS f JOIN billing.wallets AS w USING (owner_id)
            ON CONFLICT (owner_id, idempotency_key) DO NOTHING
            RETURNING id, owner_id, amount_cents, currency, idempotency_key
            """,
            rows=orjson.dumps(rows).decode(),
        )
        return [Recharge(r.id, r.owner_id, r.amount_cents, r.currency, int(r.idempotency_key.rsplit(":", 1)[1]))
                for r in result]  # fmt: skip
