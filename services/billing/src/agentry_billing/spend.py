"""Spend caps: hold a capped run's price at admission, settle it when the run completes, release it otherwise.

Periods are calendar periods in UTC: a `day` starts at midnight, a `month` on its first, and `total` never ends.
A hold stays in the period it was made in, also when the run ends after the period rolled over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from agentry_common.errors import PaymentRequired
from agentry_common.requests import GetSpent, ReserveSpend, SpendReserved, Spent

from .spend_repository import SpendRepository

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER = {"day": "per day", "month": "per month", "total": "in total"}


def period_start(period: str, now: datetime) -> datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return EPOCH


async def reserve(repo: SpendRepository, cmd: ReserveSpend, now: datetime | None = None) -> SpendReserved:
    start = period_start(cmd.period, now or datetime.now(UTC))
    if not await repo.hold(cmd.run_id, cmd.scope, start, cmd.amount_cents):
        return SpendReserved(spent_cents=await repo.total(cmd.scope, start))  # a retry: held already
    total = await repo.reserve(cmd.scope, start, cmd.amount_cents, cmd.cap_cents)
    if total is None:  # the caller's transaction rolls back, the hold row with it
        raise PaymentRequired(
            f"{cmd.what} of {cmd.cap_cents} cents {_PER[cmd.period]} is reached; this run would pass it",
            code=cmd.code,
        )
    return SpendReserved(spent_cents=total)


async def spent(repo: SpendRepository, cmd: GetSpent, now: datetime | None = None) -> Spent:
    at = now or datetime.now(UTC)
    return Spent(spent_cents={s.scope: await repo.total(s.scope, period_start(s.period, at)) for s in cmd.scopes})


async def end_holds(repo: SpendRepository, run_ids: Sequence[str], to: Literal["settled", "released"]) -> int:
    """End the holds of these runs (most have none: one read finds which), in the caller's transaction."""
    ended = 0
    for run_id in await repo.with_holds(run_ids) if run_ids else []:
        ended += await repo.end(run_id, to)
    return ended


def stale_before(now: datetime, max_hold_s: float) -> datetime:
    return now - timedelta(seconds=max_hold_s)
