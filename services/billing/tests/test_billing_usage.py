"""The usage projection, with billing running as real processes on real NATS and PostgreSQL: every ended run is
counted once in the same transaction as its charge, whatever the replays, and agrees with the ledger."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from agentry_billing.usage import BOUNDS, HIST_BUCKETS, latency_bucket, percentile
from agentry_common import rpc, subjects
from agentry_common.events import RunError, RunFailed, Usage
from agentry_common.usage_requests import GetUsage, UsageReport

MAIN = subjects.BILLING_CONSUMER


def test_latency_percentiles_are_within_one_bucket_of_the_exact_value() -> None:
    latencies = [random.randint(1, 120_000) for _ in range(5000)]
    hist = [0] * HIST_BUCKETS
    for ms in latencies:
        hist[latency_bucket(ms)] += 1
    exact = sorted(latencies)
    for q in (0.5, 0.95):
        true = exact[int(q * len(exact)) - 1]
        assert abs(percentile(hist, q) - true) <= 0.25 * true + FIRST_MS, q  # type: ignore[operator]
    assert percentile([0] * HIST_BUCKETS, 0.5) is None
    assert latency_bucket(10**9) == HIST_BUCKETS - 1 and BOUNDS[1] == 12.5


FIRST_MS = 10


async def _usage(nc, owner: str, start: datetime, end: datetime, **fields) -> UsageReport:  # type: ignore[no-untyped-def]
    query = GetUsage(owner_id=owner, start=start, end=end, **fields)
    return await rpc.call(nc, subjects.WALLET_USAGE, query, UsageReport, timeout=10)


async def test_replayed_runs_are_counted_once_and_usage_agrees_with_the_ledger(
    billing_replicas, events, ledger, nc, new_owner, fund, eventually
) -> None:
    owner = new_owner()
    await fund(owner, 300)
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    completed = [
        events.completed(
            owner, random.choice([0, 2, 5]), endpoint_id=random.choice(["aep_usage_a", "aep_usage_b"]),
            occurred_at=base + timedelta(minutes=random.randint(0, 30 * 60)),
            usage=Usage(tokens_input=random.randint(1, 100), tokens_output=random.randint(1, 50),
                        cost_cents=random.random(), latency_ms=random.randint(5, 5000)),
        )
        for _ in range(250)
    ]  # fmt: skip
    failed = [
        RunFailed(run_id=f"run_{uuid.uuid4().hex}", endpoint_id="aep_usage_a", owner_id=owner,
                  price_per_run_cents=5, error=RunError(code="timeout", message="too slow"),
                  occurred_at=base + timedelta(hours=2), usage=Usage(tokens_input=3, latency_ms=30_000))
        for _ in range(40)
    ]  # fmt: skip
    await events.publish([*completed, *failed])
    await events.publish([events.replay(r) for r in completed], fresh_msg_id=True)
    await events.publish(failed, fresh_msg_id=True)
    priced = [r.run_id for r in completed if r.price_per_run_cents > 0]
    charges = await ledger.wait_for_charges(priced)
    await events.quiescent(MAIN)
    start, end = base - timedelta(hours=1), base + timedelta(days=2)

    async def all_counted() -> UsageReport | None:
        report = await _usage(nc, owner, start, end, granularity="hour")
        return report if report.totals.runs == 290 else None

    report = await eventually(all_counted, 60)
    assert report is not None, "every run is counted once"
    totals = report.totals
    assert (totals.succeeded, totals.failed) == (250, 40)
    assert totals.tokens_input == sum(r.usage.tokens_input for r in completed) + 3 * 40
    assert totals.tokens_output == sum(r.usage.tokens_output for r in completed)
    cost = sum(Decimal(str(r.usage.cost_cents)).quantize(Decimal("0.000001")) for r in completed)
    assert Decimal(str(totals.cost_cents)).quantize(Decimal("0.0001")) == cost.quantize(Decimal("0.0001"))
    collected = sum(c.amount_cents for c in charges.values() if c.status != "uncollected")
    uncollected = sum(c.amount_cents for c in charges.values() if c.status == "uncollected")
    assert (totals.charged_cents, totals.uncollected_cents) == (collected, uncollected)
    assert uncollected > 0, "the wallet ran dry on the way"
    debits = [e for e in await ledger.entries(owner) if e.kind in ("run_charge", "settlement")]
    assert totals.charged_cents == -sum(e.amount_cents for e in debits)

    by_endpoint = await _usage(nc, owner, start, end, granularity="day", group_by="endpoint")
    for endpoint_id in ("aep_usage_a", "aep_usage_b"):
        mine = [r for r in [*completed, *failed] if r.endpoint_id == endpoint_id]
        assert sum(b.runs for b in by_endpoint.buckets if b.endpoint_id == endpoint_id) == len(mine)
    hours = {(r.occurred_at.replace(minute=0, second=0, microsecond=0)) for r in [*completed, *failed]}
    assert {b.start for b in report.buckets} == hours

    await fund(owner, 100_000)  # settles the uncollected charges: usage moves them to charged, same buckets

    async def settled() -> UsageReport | None:
        again = await _usage(nc, owner, start, end, granularity="month")
        return again if again.totals.uncollected_cents == 0 else None

    after = await eventually(settled, 30)
    assert after is not None and after.totals.charged_cents == collected + uncollected
    assert after.totals.runs == 290
