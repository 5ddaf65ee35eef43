"""All SQL of the webhooks service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Delivery, DeliveryAttempt, Webhook


@dataclass(frozen=True)
class Claimed:
    """A due delivery a replica took, with what sending it needs."""

    id: str
    owner_id: str
    body: str
    lease: str
    attempt_count: int
    give_up_at: datetime
    url: str
    secret_id: str
    enabled: bool


class WebhooksRepository:
    def __init__(self, session: AsyncSession):
        self.session = session

    # --- subscriptions ---

    async def add(self, webhook: Webhook) -> None:
        self.session.add(webhook)
        await self.session.flush()
        await self.session.refresh(webhook)  # the server's created_at

    async def webhook(self, owner_id: str, webhook_id: str, *, lock: bool = False) -> Webhook | None:
        query = select(Webhook).where(Webhook.id == webhook_id, Webhook.owner_id == owner_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def webhooks(self, owner_id: str) -> list[Webhook]:
        query = select(Webhook).where(Webhook.owner_id == owner_id).order_by(Webhook.created_at, Webhook.id)
        return list(await self.session.scalars(query))

    async def subscribed(self, owner_id: str, event_type: str) -> list[Webhook]:
        """The owner's enabled webhooks that receive this event type."""
        query = select(Webhook).where(
            Webhook.owner_id == owner_id, Webhook.enabled.is_(True), Webhook.events.contains([event_type])
        )
        return list(await self.session.scalars(query))

    async def save(self, webhook: Webhook) -> None:
        """Write a changed webhook now, so a constraint it breaks fails here rather than at commit."""
        webhook.updated_at = func.now()
        await self.session.flush()
        await self.session.refresh(webhook)

    async def delete(self, webhook: Webhook) -> None:
        await self.session.delete(webhook)  # its deliveries and attempts go with it (ON DELETE CASCADE)
        await self.session.flush()

    # --- deliveries ---

    async def enqueue(self, rows: Sequence[dict[str, object]]) -> list[str]:
        """Insert deliveries, skipping any (webhook, event) already there; returns the ids inserted."""
        if not rows:
            return []
        stmt = insert(Delivery).values(list(rows)).on_conflict_do_nothing(constraint="uq_deliveries_webhook_event")
        return list(await self.session.scalars(stmt.returning(Delivery.id)))

    async def delivery(self, webhook_id: str, delivery_id: str, *, lock: bool = False) -> Delivery | None:
        query = select(Delivery).where(Delivery.id == delivery_id, Delivery.webhook_id == webhook_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.scalars(query)).one_or_none()

    async def deliveries(self, webhook_id: str, limit: int, after: tuple[datetime, str] | None) -> list[Delivery]:
        """Newest first; `after` is the (created_at, id) of the last one of the previous page."""
        query = select(Delivery).where(Delivery.webhook_id == webhook_id)
        if after is not None:
            at, last_id = after
            query = query.where(or_(Delivery.created_at < at, and_(Delivery.created_at == at, Delivery.id < last_id)))
        query = query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit)
        return list(await self.session.scalars(query))

    async def attempts(self, delivery_ids: Sequence[str]) -> dict[str, list[DeliveryAttempt]]:
        by_delivery: dict[str, list[DeliveryAttempt]] = {d: [] for d in delivery_ids}
        if delivery_ids:
            query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids))
            for attempt in await self.session.scalars(query.order_by(DeliveryAttempt.id)):
                by_delivery[attempt.delivery_id].append(attempt)
        return by_delivery

    async def count_due(self) -> int:
        query = select(func.count()).where(Delivery.status == "pending", Delivery.next_attempt_at <= func.now())
        return int(await self.session.scalar(query) or 0)

    async def claim_due(self, limit: int, lease: str, lease_s: float) -> list[Claimed]:
        """Take up to `limit` due deliveries: no other replica takes them until the lease runs out (a crash), so
        two never send the same delivery at once."""
        due = (
            select(Delivery.id)
            .where(Delivery.status == "pending", Delivery.next_attempt_at <= func.now())
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(Delivery)
            .where(Delivery.id.in_(due))
            .values(lease=lease, next_attempt_at=func.now() + timedelta(seconds=lease_s))
            .returning(Delivery.id)
        )
        ids = list(await self.session.scalars(stmt))
        if not ids:
            return []
        query = (
            select(Delivery, Webhook.url, Webhook.secret_id, Webhook.enabled)
            .join(Webhook, Webhook.id == Delivery.webhook_id)
            .where(Delivery.id.in_(ids))
        )
        return [
            Claimed(d.id, d.owner_id, d.body, lease, d.attempt_count, d.give_up_at, url, secret_id, enabled)
            for d, url, secret_id, enabled in (await self.session.execute(query)).tuples()
        ]

    async def record(
        self,
        claimed: Claimed,
        attempt: DeliveryAttempt | None,
        status: str,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Store an attempt's outcome, unless the lease was lost meanwhile (it ran out and another replica took
        the delivery): then the attempt is still logged, the state left alone. Nothing is written for a delivery
        deleted meanwhile (with its webhook)."""
        stmt = (
            update(Delivery)
            .where(Delivery.id == claimed.id, Delivery.lease == claimed.lease)
            .values(
                status=status,
                next_attempt_at=next_attempt_at,
                lease=None,
                attempt_count=Delivery.attempt_count + (1 if attempt is not None else 0),
            )
        )
        result = await self.session.execute(stmt)
        kept = bool(result.rowcount)  # type: ignore[attr-defined]
        if attempt is not None and (kept or await self.session.get(Delivery, claimed.id) is not None):
            self.session.add(attempt)
        return kept

    async def purge_finished(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` finished deliveries queued before `before` (their attempts go with them); how many.
        Pending ones stay, whatever their age."""
        old = (
            select(Delivery.id)
            .where(Delivery.status != "pending", Delivery.created_at < before)
            .order_by(Delivery.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        result = await self.session.execute(delete(Delivery).where(Delivery.id.in_(old)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def requeue(self, delivery: Delivery, give_up_at: datetime, now: datetime) -> None:
        """Make a delivery due now with a new retry window. One being sent right now (leased, lease not run out)
        keeps its lease: the attempt in flight decides, and a failure is retried within the new window — two
        sends of one delivery never overlap."""
        values: dict[str, object] = {"give_up_at": give_up_at}
        in_flight = (
            delivery.lease is not None and delivery.next_attempt_at is not None and delivery.next_attempt_at > now
        )
        if not in_flight:
            values.update(status="pending", next_attempt_at=func.now(), lease=None)
        await self.session.execute(update(Delivery).where(Delivery.id == delivery.id).values(**values))
