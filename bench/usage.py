"""Usage query benchmark (not a test): `GET /api/usage`'s query for an owner with a million runs over a year.

Starts its own PostgreSQL through `agentry_dev.stack` in a temporary folder, migrated, and generates the usage
projection straight into `billing.usage_hourly` with `generate_series` (what a year of charging would have left
there): for the measured owner 1,000,000 runs in hourly buckets over 365 days, two endpoints and three caller
keys; a few other owners of the same size share the table. Then it times the billing service's own query and
roll-up (`usage.report`: SQL plus percentiles) for a 30-day daily report, grouped and not, at random 30-day
windows of the year. The last line is one JSON object with `usage_query_ms` (p95 of the 30-day daily query).

    BENCH_QUERIES=200 BENCH_OTHER_OWNERS=3 python bench/usage.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from agentry_billing import usage
from agentry_billing.usage_repository import UsageRepository
from agentry_common.db import make_engine, make_sessionmaker
from agentry_common.usage_requests import GetUsage
from agentry_dev.stack import Stack, free_port

QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))
OTHER_OWNERS = int(os.environ.get("BENCH_OTHER_OWNERS", "3"))
RUNS = 1_000_000
ENDPOINTS, KEYS, HOURS = 2, 3, 365 * 24
OWNER = "bench-usage-owner"
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)

# One row per hour, endpoint and key; the runs of the year spread over the rows (the remainder on the first
# rows), latencies in a band of the histogram, a price of 2 cents per succeeded run, a few uncollected.
GENERATE = """
INSERT INTO billing.usage_hourly (owner_id, hour, endpoint_id, key_id, runs, succeeded, failed, tokens_input,
    tokens_output, cost_cents, charged_cents, uncollected_cents, latency_hist)
SELECT :owner, :start + make_interval(hours => h), 'aep_bench_' || e, 'ak_bench_' || k, n, n - n / 20, n / 20,
       n * 800, n * 200, n * 0.35, (n - n / 20) * 2 - CASE WHEN h % 97 = 0 THEN 2 ELSE 0 END,
       CASE WHEN h % 97 = 0 THEN 2 ELSE 0 END,
       ARRAY(SELECT CASE WHEN b BETWEEN 20 AND 29 THEN n / 10 + CASE WHEN b - 20 < n % 10 THEN 1 ELSE 0 END
                         ELSE 0 END::bigint
             FROM generate_series(0, 47) AS b)
FROM (
    SELECT h, e, k, :per_row + CASE WHEN row_number() OVER () <= :remainder THEN 1 ELSE 0 END AS n
    FROM generate_series(0, :hours - 1) AS h, generate_series(1, :endpoints) AS e, generate_series(1, :keys) AS k
) AS rows
"""


async def generate(database_url: str) -> int:
    engine = make_engine(database_url, pool_size=2)
    rows = HOURS * ENDPOINTS * KEYS
    per_row, remainder = divmod(RUNS, rows)
    async with engine.begin() as conn:
        for owner in [OWNER, *(f"bench-usage-other-{n}" for n in range(OTHER_OWNERS))]:
            await conn.execute(
                text(GENERATE), {"owner": owner, "start": YEAR_START, "per_row": per_row, "remainder": remainder,
                                 "hours": HOURS, "endpoints": ENDPOINTS, "keys": KEYS},
            )  # fmt: skip
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE billing.usage_hourly"))
        total = (
            await conn.execute(text("SELECT sum(runs) FROM billing.usage_hourly WHERE owner_id = :o"), {"o": OWNER})
        ).scalar_one()
    await engine.dispose()
    return int(total)


async def measure(database_url: str, group_by: str) -> list[float]:
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    timings = []
    for n in range(QUERIES + 5):
        start = YEAR_START + timedelta(days=random.randint(0, 334))
        query = GetUsage(owner_id=OWNER, start=start, end=start + timedelta(days=30), granularity="day",
                         group_by=group_by)  # type: ignore[arg-type]  # fmt: skip
        began = time.perf_counter()
        async with sessions() as session, session.begin():
            report = await usage.report(UsageRepository(session), query)
        elapsed = (time.perf_counter() - began) * 1000
        assert report.totals.runs > 0 and report.totals.latency_ms_p95 is not None
        if n >= 5:  # the first few warm the pool and the caches
            timings.append(elapsed)
    await engine.dispose()
    return timings


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentry-bench-usage-") as tmp:
        stack = Stack(Path(tmp), nats_port=free_port(), pg_port=free_port(), fast_pg=True,
                      echo=bool(os.environ.get("BENCH_ECHO")))  # fmt: skip
        stack.nats_url = stack.database_url = ""  # always its own servers
        try:
            await asyncio.to_thread(stack.start_servers)
            await asyncio.to_thread(stack.migrate)
            began = time.perf_counter()
            total = await generate(stack.database_url)
            generated_s = time.perf_counter() - began
            plain = await measure(stack.database_url, "none")
            grouped = await measure(stack.database_url, "key")
        finally:
            await asyncio.to_thread(stack.stop)

    assert total == RUNS, total
    rows = HOURS * ENDPOINTS * KEYS
    print(f"usage: one owner with {total:,} runs over a year ({rows:,} hourly rows; {OTHER_OWNERS} other owners "
          f"alike), generated in {generated_s:.1f}s")  # fmt: skip
    print(f"{'30-day daily query':<28}{'queries':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for name, t in (("group_by=none", plain), ("group_by=key", grouped)):
        print(f"{name:<28}{len(t):>8}{statistics.median(t):>9.1f}{p95(t):>9.1f}{max(t):>9.1f}")
    print("target: p95 under 100 ms (billing's SQL roll-up of hourly buckets plus the percentiles, in-process)")
    result = {
        "bench": "usage",
        "runs": total,
        "hourly_rows": rows,
        "usage_query_ms": round(p95(plain), 1),
        "usage_query_ms_p50": round(statistics.median(plain), 1),
        "usage_query_ms_grouped_by_key": round(p95(grouped), 1),
        "queries": QUERIES,
        "target_ms": 100,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
