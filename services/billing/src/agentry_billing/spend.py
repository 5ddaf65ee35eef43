"""Spend caps and endpoint budgets: hold a limited run's price at admission in every scope limiting it (all or
none), settle it when the run completes, release it otherwise. An endpoint budget used up is announced once.

Periods are calendar periods in UTC: a `day` starts at midnight, a `month` on its first, and `total` never ends.
A hold stays in the period it was made in, also when the run ends after the period rolled over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from agentry_common.errors import PaymentRequired
from agentry_common.events import BudgetReached
from agentry_common.requests import GetSpent, ReserveSpend, SpendLimit, SpendReserved, Spent

from .spend_repository import SpendRepository

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER = {"day": "per day", "month": "per month", "total": "in total"}


def period_start(period: str, now: datetime) -> datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return EPOCH


@dataclass(frozen=True)
class Reached:
    """An endpoint budget used up in a period: to announce once (`billing.budget.reached`)."""

    limit: SpendLimit
    period_start: datetime

    def event(self) -> BudgetReached:
        assert self.limit.endpoint_id is not None and self.limit.owner_id is not None
        return BudgetReached(
            owner_id=self.limit.owner_id, endpoint_id=self.limit.endpoint_id, budget_cents=self.limit.cap_cents,
            budget_period=self.limit.period, period_start=self.period_start,
        )  # fmt: skip


class Refused(Exception):
    """A limit refused the run; the caller rolls back every hold of it, then answers `error`."""

    def __init__(self, error: PaymentRequired, reached: Reached | None):
        super().__init__(str(error))
        self.error = error
        self.reached = reached


async def reserve(
    repo: SpendRepository, cmd: ReserveSpend, now: datetime | None = None
) -> tuple[SpendReserved, list[Reached]]:
    """Hold the run's price in every limit, in scope order (so concurrent reservations lock counters in the same
    order), all or none: a refusal raises `Refused` and the caller's rollback takes the holds made before it."""
    at = now or datetime.now(UTC)
    totals, reached = [], []
    for limit in sorted(cmd.limits, key=lambda lim: lim.scope):
        start = period_start(limit.period, at)
        if not await repo.hold(cmd.run_id, limit.scope, start, cmd.amount_cents):
            totals.append(await repo.total(limit.scope, start))  # a retry: held already
            continue
        total = await repo.reserve(limit.scope, start, cmd.amount_cents, limit.cap_cents)
        budget = Reached(limit, start) if limit.endpoint_id is not None else None
        if total is None:
            error = PaymentRequired(
                f"{limit.what} of {limit.cap_cents} cents {_PER[limit.period]} is reached; this run would pass it",
                code=limit.code,
            )
            raise Refused(error, budget)
        totals.append(total)
        if budget is not None and total >= limit.cap_cents:
            reached.append(budget)
    return SpendReserved(spent_cents=max(totals)), reached


async def announce(repo: SpendRepository, reached: Reached) -> BudgetReached | None:
    """The event to publish, or None when this period's budget (of this amount) was announced already."""
    limit = reached.limit
    return reached.event() if await repo.mark_reached(limit.scope, reached.period_start, limit.cap_cents) else None


async def spent(repo: SpendRepository, cmd: GetSpent, now: datetime | None = None) -> Spent:
    at = now or datetime.now(UTC)
    return Spent(spent_cents={s.scope: await repo.total(s.scope, period_start(s.period, at)) for s in cmd.scopes})


async def end_holds(repo: SpendRepository, run_ids: Sequence[str], to: Literal["settled", "released"]) -> int:
    """End the holds of these runs (most have none: one read finds which), in the caller's transaction, in
    counter order."""
    ended = 0
    for run_id, scope in await repo.with_holds(run_ids) if run_ids else []:
        ended += await repo.end(run_id, scope, to)
    return ended


def stale_before(now: datetime, max_hold_s: float) -> datetime:
    return now - timedelta(seconds=max_hold_s)
