"""Usage analytics: a projection of every ended run into hourly buckets, kept in the charge's own transaction.

Why in billing: its figures must agree with the ledger to the cent, and billing already takes each
`run.completed` exactly once per run (a unique charge per run). A run is projected together with its charge,
in the same transaction, guarded by a per-run marker row (`usage_runs`, unique run id): a redelivered or
replayed event finds its marker and adds nothing. A charge settled later moves its price from
`uncollected_cents` to `charged_cents` of the bucket its run was counted in, in the settling transaction.

Latency is kept as a fixed-bucket histogram per hour (bounds growing by 25%), so p50/p95 can be computed for
any roll-up: a percentile is interpolated inside its bucket, within 12.5% of the exact value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from agentry_common.events import BalanceLow, RunCompleted, RunFailed
from agentry_common.usage_requests import GetUsage, UsageBucket, UsageCounters, UsageReport

from .domain import Book, ChargeOutcome, UnbillableEvent, _cost
from .usage_repository import HIST_BUCKETS, UsageRepository, UsageRow

# Bucket i holds latencies in (BOUNDS[i-1], BOUNDS[i]] ms; the last one everything above BOUNDS[-2].
FIRST_BOUND_MS = 10.0
GROWTH = 1.25
BOUNDS = [FIRST_BOUND_MS * GROWTH**i for i in range(HIST_BUCKETS)]


def latency_bucket(latency_ms: int) -> int:
    if latency_ms <= FIRST_BOUND_MS:
        return 0
    return min(HIST_BUCKETS - 1, math.ceil(math.log(latency_ms / FIRST_BOUND_MS, GROWTH) - 1e-9))


def percentile(hist: Sequence[int], q: float) -> int | None:
    """The q-quantile (0 < q < 1) of a histogram, linearly interpolated inside its bucket; None when empty."""
    total = sum(hist)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            low = 0.0 if i == 0 else BOUNDS[i - 1]
            high = BOUNDS[i] if i < HIST_BUCKETS - 1 else BOUNDS[i - 1] * GROWTH
            return round(low + (high - low) * (rank - seen) / n)
        seen += n
    return round(BOUNDS[-1])


def _hour(at: datetime) -> datetime:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class UsageRun:
    """One ended run, as the projection counts it."""

    run_id: str
    owner_id: str
    endpoint_id: str
    key_id: str  # "" without a key (test and public runs, or events from before runs carried one)
    hour: datetime
    succeeded: bool
    tokens_input: int
    tokens_output: int
    cost_cents: Decimal
    latency_ms: int

    @classmethod
    def from_event(cls, event: RunCompleted | RunFailed) -> UsageRun:
        """Raises `UnbillableEvent` for ids that cannot be stored (a producer bug)."""
        key_id = getattr(event, "key_id", None) or ""  # on run events once the runner sets it
        for name, value, limit in (("run_id", event.run_id, 64), ("endpoint_id", event.endpoint_id, 64),
                                   ("owner_id", event.owner_id, 255), ("key_id", key_id or "-", 64)):  # fmt: skip
            if not value or len(value) > limit:
                raise UnbillableEvent(f"{name} is empty or longer than {limit} characters")
        return cls(
            run_id=event.run_id,
            owner_id=event.owner_id,
            endpoint_id=event.endpoint_id,
            key_id=key_id,
            hour=_hour(event.occurred_at),
            succeeded=isinstance(event, RunCompleted),
            tokens_input=event.usage.tokens_input,
            tokens_output=event.usage.tokens_output,
            cost_cents=_cost(event.usage.cost_cents),
            latency_ms=event.usage.latency_ms,
        )


async def record(repo: UsageRepository, runs: Iterable[UsageRun], outcomes: Sequence[ChargeOutcome]) -> int:
    """Count runs not counted before, with their charge (if any) as it stands; returns how many were new.
    Runs in the caller's transaction, after the charges: same commit, same fate."""
    unique = {r.run_id: r for r in runs}
    if not unique:
        return 0
    new = await repo.claim_runs(list(unique.values()))
    if not new:
        return 0
    by_run = {o.run_id: o for o in outcomes}
    rows: dict[tuple[str, datetime, str, str], UsageRow] = {}
    for run_id in new:
        run = unique[run_id]
        key = (run.owner_id, run.hour, run.endpoint_id, run.key_id)
        row = rows.get(key)
        if row is None:
            row = rows[key] = UsageRow(*key, hist=[0] * HIST_BUCKETS)
        row.runs += 1
        row.succeeded += run.succeeded
        row.failed += not run.succeeded
        row.tokens_input += run.tokens_input
        row.tokens_output += run.tokens_output
        row.cost_cents += run.cost_cents
        row.hist[latency_bucket(run.latency_ms)] += 1
        outcome = by_run.get(run_id)
        if outcome is not None and outcome.owner_id == run.owner_id:
            if outcome.collected:
                row.charged_cents += outcome.amount_cents
            else:
                row.uncollected_cents += outcome.amount_cents
    await repo.add(list(rows.values()))
    return len(new)


async def after_credit(repo: UsageRepository, book: Book, settled: Sequence[tuple[str, int]]) -> None:
    """In a credit's transaction (wallet locked): charges it settled (run id, cents) move from uncollected to
    charged in their run's bucket, and the low-balance alert is armed again if the balance is back up."""
    if settled:
        await repo.move_settled(dict(settled))
    await repo.rearm(book.owner_id, book.balance_cents)


async def low_balance_crossings(
    repo: UsageRepository, charged: Iterable[str], replayed: Iterable[str] = ()
) -> list[BalanceLow]:
    """Disarm and announce each armed alert whose wallet a charge of this transaction (owners `charged`) took
    below its threshold; the wallets are locked by the charge, so a crossing fires once.

    Owners with `replayed` charges (a redelivered batch, whose announcement may have been lost) get their
    current crossing announced again if their wallet is still below: the same event id downstream
    (`Nats-Msg-Id`, webhook event key), so at most one webhook per crossing."""
    owners = sorted(set(charged))
    fired = await repo.fire_low_balance(owners) if owners else []
    again = sorted(set(replayed) - {o for o, *_ in fired})
    if again:
        fired += await repo.still_low(again)
    return [BalanceLow(owner_id=o, balance_cents=b, threshold_cents=t, crossing=c) for o, b, t, c in fired]


def _counters(row: UsageRow | None) -> UsageCounters:
    if row is None:
        return UsageCounters()
    return UsageCounters(
        runs=row.runs,
        succeeded=row.succeeded,
        failed=row.failed,
        tokens_input=row.tokens_input,
        tokens_output=row.tokens_output,
        cost_cents=float(row.cost_cents),
        charged_cents=row.charged_cents,
        uncollected_cents=row.uncollected_cents,
        latency_ms_p50=percentile(row.hist, 0.50),
        latency_ms_p95=percentile(row.hist, 0.95),
    )


async def report(repo: UsageRepository, query: GetUsage) -> UsageReport:
    rows = await repo.query(query)
    buckets = []
    total: UsageRow | None = None
    for row in rows:
        counters = _counters(row).model_dump()
        buckets.append(
            UsageBucket(
                start=row.hour,
                endpoint_id=(row.endpoint_id or None) if query.group_by == "endpoint" else None,
                key_id=(row.key_id or None) if query.group_by == "key" else None,
                **counters,
            )
        )
        total = row if total is None else total.plus(row)
    return UsageReport(buckets=buckets, totals=_counters(total))
